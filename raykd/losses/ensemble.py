"""Combining teacher logits: the plain ensemble average and Weighted KD (ROaD).

Teachers are combined *before* the softmax: ``z = (1/M) * sum_m w_m * z_m`` over M
teachers with logits ``z_m`` of shape (B, C) or (B, H, C). Weighted Knowledge
Distillation (ElFadeel & Peshterliev 2021, "Robustly Optimized and Distilled Training
for NLU", arXiv:2103.08809, Algorithm 2) picks the weights ``w_m`` per example and head
from whether each teacher's argmax is the gold label.
"""

import torch
from torch import Tensor

from raykd.losses.kd import check_labels_and_mask, check_values, compute_dtype
from raykd.losses.weights import check_teacher_weights, per_teacher


def _check_per_teacher(teacher_logits: Tensor) -> None:
    shape = tuple(teacher_logits.shape)
    if len(shape) not in (3, 4) or shape[0] == 0 or shape[-1] == 0:
        raise ValueError(
            "teacher_logits must have shape (M, B, C) or (M, B, H, C) with M >= 1 and C >= 1, "
            f"got shape {shape}"
        )
    if not teacher_logits.is_floating_point():
        raise ValueError(
            f"teacher_logits must be a floating-point tensor, got dtype {teacher_logits.dtype}"
        )


def combine_teachers(teacher_logits: Tensor, weights: Tensor | None = None) -> Tensor:
    """Ensemble the teachers' logits: ``z = (1/M) * sum_m w_m * z_m``.

    Args:
        teacher_logits: Per-teacher logits, (M, B, C) or (M, B, H, C).
        weights: None for the plain average (all ``w_m = 1``), or per-teacher weights of
            shape (M, B) / (M, B, H), e.g. from :func:`wkd_weights`.

    Returns:
        Combined logits (B, C) or (B, H, C), in the dtype of ``teacher_logits`` (summed in
        float32, or float64 for float64 input).

    Raises:
        ValueError: on a bad ``teacher_logits`` shape or ``weights`` of the wrong shape.
    """
    _check_per_teacher(teacher_logits)
    if weights is not None and weights.shape != teacher_logits.shape[:-1]:
        raise ValueError(
            f"weights shape {tuple(weights.shape)} does not fit teacher_logits shape "
            f"{tuple(teacher_logits.shape)}: expected {tuple(teacher_logits.shape[:-1])}"
        )
    return combine_unchecked(teacher_logits, weights)


def combine_unchecked(teacher_logits: Tensor, weights: Tensor | None = None) -> Tensor:
    """:func:`combine_teachers` without its shape checks (shapes fixed once per run)."""
    dtype = compute_dtype(teacher_logits)
    logits = teacher_logits.to(dtype)
    if weights is None:
        return logits.mean(dim=0).to(teacher_logits.dtype)
    combined = (logits * weights.to(dtype).unsqueeze(-1)).mean(dim=0)
    return combined.to(teacher_logits.dtype)


def wkd_weights(
    teacher_logits: Tensor,
    labels: Tensor,
    *,
    incorrect_weight: float,
    mask: Tensor | None = None,
    teacher_weights: Tensor | None = None,
) -> Tensor:
    """Per-teacher WKD weights (ROaD, "Algorithm 2: Weighted KD Normalization").

    Per example and per head: teacher m is correct iff ``argmax_c z_m[c] == y`` (the
    argmax runs over valid positions only; ties go to the lowest index, as in
    ``torch.argmax``). With ``W = incorrect_weight``, ``n_wrong`` incorrect and
    ``n_right = M - n_wrong`` correct teachers::

        w_m = W                                  if teacher m is incorrect
        w_m = W_hat = (M - n_wrong * W) / n_right  if teacher m is correct

    so the weights sum to M. If all teachers are wrong (a division by zero in the
    paper) every weight is 1, i.e. the plain average; ``W = 1`` also gives the plain
    average. Example with M = 3, W = 0.75: one wrong -> W_hat = 1.125, two wrong -> 1.5.

    With per-teacher weights ``q`` (``teacher_weights``, e.g. from
    :func:`raykd.losses.accuracy_weights`; summing to M) the same rule runs on q's mass
    instead of on counts::

        w_m = q_m * W                                          if teacher m is incorrect
        w_m = q_m * (M - W * sum_wrong q) / sum_right q        if teacher m is correct

    so the weights still sum to M; all q = 1 is Algorithm 2 exactly, ``W = 1`` gives q,
    and where no teacher with q > 0 is right the weights are q.

    Args:
        teacher_logits: Per-teacher logits, (M, B, C) or (M, B, H, C).
        labels: Gold class indices, (B,) or (B, H) (per head: e.g. gold start and end).
        incorrect_weight: W in (0, 1], the weight of an incorrect teacher.
        mask: Optional bool (B, C) / (B, H, C), True = valid position.
        teacher_weights: Optional per-teacher weights q, (M,), finite, >= 0, summing to M.

    Returns:
        Weights (M, B) or (M, B, H) in the dtype of ``teacher_logits``.

    Raises:
        ValueError: on W outside (0, 1], bad shapes, NaN/inf teacher logits at valid
            positions, labels out of [0, C) or at masked positions, or bad teacher_weights.
    """
    if not 0.0 < incorrect_weight <= 1.0:
        raise ValueError(f"incorrect_weight must be in (0, 1], got {incorrect_weight!r}")
    _check_per_teacher(teacher_logits)
    if teacher_weights is not None:
        check_teacher_weights(teacher_weights, teacher_logits.shape[0])
    check_labels_and_mask(labels, mask, logits=teacher_logits, name="teacher_logits", leading=1)
    check_values(labels, mask, num_classes=teacher_logits.shape[-1], teacher_logits=teacher_logits)
    return wkd_weights_unchecked(teacher_logits, labels, incorrect_weight=incorrect_weight,
                                 mask=mask, teacher_weights=teacher_weights)


def wkd_weights_unchecked(
    teacher_logits: Tensor, labels: Tensor, *, incorrect_weight: float, mask: Tensor | None = None,
    teacher_weights: Tensor | None = None,
) -> Tensor:
    """:func:`wkd_weights` without its checks (W checked once, inputs at load time)."""
    num_teachers = teacher_logits.shape[0]
    if mask is not None:
        teacher_logits = teacher_logits.masked_fill(~mask, float("-inf"))
    correct = teacher_logits.argmax(dim=-1) == labels.long()  # (M, B[, H])
    dtype = compute_dtype(teacher_logits)
    if teacher_weights is None:
        n_right = correct.sum(dim=0, keepdim=True).to(dtype)
        w_hat = (num_teachers - (num_teachers - n_right) * incorrect_weight) / n_right.clamp(min=1)
        weights = torch.where(correct, w_hat, incorrect_weight)
        weights = torch.where(n_right == 0, 1.0, weights)  # all wrong: plain average
        return weights.to(teacher_logits.dtype)
    prior = per_teacher(teacher_weights, correct, dtype).expand(correct.shape)
    right = torch.where(correct, prior, 0.0).sum(dim=0, keepdim=True)
    wrong = torch.where(correct, 0.0, prior).sum(dim=0, keepdim=True)
    w_hat = (num_teachers - incorrect_weight * wrong) / right.clamp(min=torch.finfo(dtype).tiny)
    weights = prior * torch.where(correct, w_hat, incorrect_weight)
    weights = torch.where(right > 0, weights, prior)  # no weighted teacher right: q itself
    return weights.to(teacher_logits.dtype)


def wkd_combine(
    teacher_logits: Tensor,
    labels: Tensor,
    *,
    incorrect_weight: float,
    mask: Tensor | None = None,
    teacher_weights: Tensor | None = None,
) -> Tensor:
    """Weighted-KD ensemble logits: ``combine_teachers(z, wkd_weights(z, y, W, q))``.

    Args:
        teacher_logits: Per-teacher logits, (M, B, C) or (M, B, H, C).
        labels: (B,) or (B, H) gold class indices.
        incorrect_weight: W in (0, 1].
        mask: Optional bool (B, C) / (B, H, C), True = valid position.
        teacher_weights: Optional per-teacher weights q, (M,) (see :func:`wkd_weights`).

    Returns:
        Combined logits (B, C) or (B, H, C), in the dtype of ``teacher_logits``.
    """
    weights = wkd_weights(teacher_logits, labels, incorrect_weight=incorrect_weight, mask=mask,
                          teacher_weights=teacher_weights)
    return combine_teachers(teacher_logits, weights)


def prior_weights(teacher_logits: Tensor, teacher_weights: Tensor | None) -> Tensor | None:
    """Per-teacher weights q (M,) spread to the (M, B[, H]) shape :func:`combine_teachers` takes.

    ``combine_teachers(z, prior_weights(z, q))`` is ``(1/M) sum_m q_m z_m``: KD on an
    ensemble whose teachers count unequally. None stays None (the plain average).
    """
    if teacher_weights is None:
        return None
    check_teacher_weights(teacher_weights, teacher_logits.shape[0])
    like = teacher_logits[..., 0]
    return per_teacher(teacher_weights, like, compute_dtype(teacher_logits)).expand(like.shape)
