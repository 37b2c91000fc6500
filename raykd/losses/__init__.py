"""Distillation losses as pure functions of tensors (imports torch only).

- :func:`combine_teachers`: the ensemble average of M teachers' logits.
- :func:`wkd_weights`, :func:`wkd_combine`: Weighted KD (ROaD, arXiv:2103.08809).
- :func:`accuracy_weights`: per-teacher weights from held-out accuracy (log-odds), for
  ensembles of unequal teachers; :func:`prior_weights` spreads them for
  :func:`combine_teachers`.
- :func:`kd_loss`: Hinton et al. 2015, ``alpha * T^2 * KL + (1 - alpha) * CE``.
- :func:`annealing_targets`, :func:`annealing_loss`: teacher annealing (Clark et al. 2019).
- :func:`distillation_loss`: the one dispatch over :data:`METHODS`, every input checked.
- :func:`method_loss`: a method's loss resolved once, inputs checked at load time (the
  training step's).

Shapes: per-teacher logits (M, B, C) or (M, B, H, C); student and combined logits
(B, C) or (B, H, C); labels (B,) or (B, H); optional bool mask (B, C) or (B, H, C),
True = valid position. See ``METHOD.md`` for the math.
"""

from torch import Tensor

from raykd.losses.annealing import annealing_loss, annealing_targets
from raykd.losses.dispatch import METHODS, LossFn, method_loss
from raykd.losses.ensemble import combine_teachers, prior_weights, wkd_combine, wkd_weights
from raykd.losses.kd import check_finite_logits, kd_loss, supervised_loss
from raykd.losses.weights import accuracy_weights

__all__ = [
    "METHODS",
    "LossFn",
    "accuracy_weights",
    "annealing_loss",
    "annealing_targets",
    "check_finite_logits",
    "combine_teachers",
    "distillation_loss",
    "kd_loss",
    "method_loss",
    "prior_weights",
    "wkd_combine",
    "wkd_weights",
]


def distillation_loss(
    method: str,
    student_logits: Tensor,
    teacher_logits_per_teacher: Tensor | None,
    labels: Tensor,
    *,
    temperature: float = 1.0,
    alpha: float = 0.5,
    incorrect_weight: float = 1.0,
    progress: float = 0.0,
    mask: Tensor | None = None,
    teacher_weights: Tensor | None = None,
) -> Tensor:
    """The batch loss of one distillation method, averaged over the batch (and heads).

    ============  ==============================================================
    method        loss
    ============  ==============================================================
    "none"        ``CE(softmax(s), y)``; the teachers are not used (may be None)
    "kd"          :func:`kd_loss` on ``combine_teachers(z)`` (plain average)
    "wkd"         :func:`kd_loss` on ``wkd_combine(z, y, W)`` (ROaD Algorithm 2)
    "annealing"   :func:`annealing_loss` on ``combine_teachers(z)`` with lam = progress
    ============  ==============================================================

    With ``teacher_weights`` q (M,) the ensemble is ``(1/M) sum_m q_m z_m`` for "kd" and
    "annealing", and WKD's rule runs on q (see :func:`wkd_weights`).

    Args:
        method: One of :data:`METHODS`.
        student_logits: (B, C) or (B, H, C).
        teacher_logits_per_teacher: Each teacher's logits, not combined: (M, B, C) or
            (M, B, H, C). May be None for "none".
        labels: (B,) or (B, H) gold class indices.
        temperature: T > 0 ("kd", "wkd", "annealing").
        alpha: Weight of the teacher term in [0, 1] ("kd", "wkd").
        incorrect_weight: W in (0, 1] ("wkd").
        progress: lam in [0, 1], ``step / total_steps`` ("annealing").
        mask: Optional bool (B, C) / (B, H, C), True = valid position.
        teacher_weights: Optional per-teacher weights q (M,), finite, >= 0, summing to M
            (e.g. :func:`accuracy_weights`); None = every teacher 1.

    Returns:
        The scalar mean loss, float32 (float64 for float64 inputs).

    Raises:
        ValueError: on an unknown method, missing teacher logits, or any bad input the
            called loss rejects.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if method == "none":
        return supervised_loss(student_logits, labels, mask=mask)
    if teacher_logits_per_teacher is None:
        raise ValueError(
            f"method {method!r} needs teacher_logits_per_teacher of shape (M, B, C) or "
            "(M, B, H, C), got None"
        )
    if method == "wkd":
        teacher = wkd_combine(
            teacher_logits_per_teacher, labels, incorrect_weight=incorrect_weight, mask=mask,
            teacher_weights=teacher_weights,
        )
    else:
        teacher = combine_teachers(
            teacher_logits_per_teacher, prior_weights(teacher_logits_per_teacher, teacher_weights)
        )
    if method == "annealing":
        return annealing_loss(
            student_logits,
            teacher,
            labels,
            progress=progress,
            temperature=temperature,
            mask=mask,
        )
    return kd_loss(
        student_logits, teacher, labels, temperature=temperature, alpha=alpha, mask=mask
    )
