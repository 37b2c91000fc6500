"""Per-teacher weights that do not depend on the example: a teacher's standing in the ensemble.

WKD (:func:`raykd.losses.wkd_weights`) reweights teachers *per example* from whether each
one is right on it. An ensemble of teachers of unequal quality also calls for a weight per
*teacher*: :func:`accuracy_weights` derives one from each teacher's accuracy on held-out
data (the validation split), with no hyperparameter. The plain average, KD, WKD and
annealing all take such weights (``teacher_weights``, shape (M,), summing to M); with all
weights 1 each is what it was without them.
"""

from collections.abc import Sequence

import torch
from torch import Tensor

ACCURACY_CLIP = 1e-3
"""Accuracies are clipped to ``[0, 1 - ACCURACY_CLIP]``: a teacher perfect on validation
gets a large but finite weight (``log((C - 1) * 999)``)."""

CHANCE_TOLERANCE = 1e-9
"""Log-odds at or below this count as 0: a teacher exactly at chance (``a = 1/C``, whose
log-odds come out as +-1e-16 in floating point) gets no weight."""


def accuracy_weights(
    accuracy: Tensor | Sequence[float], *, num_classes: int, clip: float = ACCURACY_CLIP
) -> Tensor:
    """Per-teacher weights from held-out accuracy: the log-odds of an optimal weighted vote.

    With ``a_m`` the accuracy of teacher m on held-out data, C classes and M teachers::

        r_m = max(0, log((C - 1) * a_m / (1 - a_m)))      a_m clipped to [0, 1 - clip]
        q_m = M * r_m / sum_k r_k

    ``r_m`` is the weight of teacher m in the most accurate weighted majority vote of
    independent classifiers whose mistakes spread evenly over the C - 1 wrong classes
    (Nitzan & Paroush 1982, "Optimal decision rules in uncertain dichotomous choice
    situations"; Shapley & Grofman 1984; for C = 2 it is ``log(a / (1 - a))``). A teacher
    no better than chance (``a_m <= 1/C``) gets 0; equal accuracies give every teacher 1,
    i.e. the plain average; the weights sum to M, as WKD's do. When every teacher is at or
    below chance all weights are 1.

    Example: C = 5, accuracies 0.78, 0.70, 0.635 -> r = 2.65, 2.24, 1.94 -> q = 1.16, 0.98,
    0.85.

    Args:
        accuracy: Each teacher's held-out accuracy in [0, 1], shape (M,).
        num_classes: C >= 2.
        clip: Accuracies above ``1 - clip`` count as ``1 - clip``; in (0, 0.5).

    Returns:
        Weights q, shape (M,), float64, each >= 0, summing to M.

    Raises:
        ValueError: on an empty or non-1-D accuracy, one outside [0, 1] or NaN, C < 2, or a
            clip outside (0, 0.5).
    """
    acc = torch.as_tensor(accuracy, dtype=torch.float64)
    if acc.dim() != 1 or acc.numel() == 0:
        raise ValueError(f"accuracy must have shape (M,) with M >= 1, got {tuple(acc.shape)}")
    if not bool(((acc >= 0) & (acc <= 1)).all()):
        raise ValueError(f"accuracy must lie in [0, 1] for every teacher, got {acc.tolist()}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
    if not 0.0 < clip < 0.5:
        raise ValueError(f"clip must be in (0, 0.5), got {clip!r}")
    a = acc.clamp(max=1.0 - clip)
    log_odds = torch.log((num_classes - 1) * a) - torch.log1p(-a)  # log(0) = -inf for a = 0
    r = torch.where(log_odds > CHANCE_TOLERANCE, log_odds, 0.0)  # at chance: 0, not rounding
    total = r.sum()
    if float(total) <= 0.0:
        return torch.ones_like(r)
    return len(r) * r / total


def check_teacher_weights(teacher_weights: Tensor, num_teachers: int | None = None) -> None:
    """Raise ValueError unless ``teacher_weights`` is (M,), finite, >= 0, with a positive sum.

    Args:
        teacher_weights: Per-teacher weights, shape (M,).
        num_teachers: M of the teacher logits they weight; None: not checked.
    """
    shape = tuple(teacher_weights.shape)
    if len(shape) != 1 or shape[0] == 0:
        raise ValueError(f"teacher_weights must have shape (M,) with M >= 1, got shape {shape}")
    if num_teachers is not None and shape[0] != num_teachers:
        raise ValueError(
            f"teacher_weights has {shape[0]} entries for {num_teachers} teachers; "
            "expected one weight per teacher"
        )
    values = teacher_weights.detach().double()
    if not bool(torch.isfinite(values).all()) or bool((values < 0).any()) or values.sum() <= 0:
        raise ValueError(
            "teacher_weights must be finite and >= 0 with a positive sum, got "
            f"{[round(v, 6) for v in values.tolist()]}"
        )


def as_teacher_weights(teacher_weights: Tensor | Sequence[float] | None) -> Tensor | None:
    """``teacher_weights`` as a checked float64 tensor of shape (M,), or None."""
    if teacher_weights is None:
        return None
    weights = torch.as_tensor(teacher_weights, dtype=torch.float64)
    check_teacher_weights(weights)
    return weights


def per_teacher(teacher_weights: Tensor, like: Tensor, dtype: torch.dtype) -> Tensor:
    """(M,) weights reshaped to (M, 1, ...) so that they broadcast over ``like`` (M, ...)."""
    return teacher_weights.to(device=like.device, dtype=dtype).reshape(
        -1, *([1] * (like.dim() - 1))
    )

