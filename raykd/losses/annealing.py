"""Teacher annealing (Clark et al. 2019, "BAM! Born-Again Multi-Task Networks").

The target moves from the teacher's soft prediction to the gold label as training
progresses: ``target = lam * onehot(y) + (1 - lam) * softmax(z / T)`` with
``lam = step / total_steps`` (``progress``) rising from 0 to 1, and the loss is the
cross-entropy of the student's ``softmax(s)`` against that target. BAM uses T = 1.
"""

import torch
from torch import Tensor
from torch.nn import functional as F

from raykd.losses.kd import (
    check_fraction,
    check_labels_and_mask,
    check_logits,
    check_pair,
    check_reduction,
    check_temperature,
    check_values,
    compute_dtype,
    masked_log_softmax,
    reduce_loss,
)


def _targets(
    teacher_logits: Tensor,
    labels: Tensor,
    mask: Tensor | None,
    *,
    progress: float,
    temperature: float,
    dtype: torch.dtype,
) -> Tensor:
    """Annealed targets for inputs already checked; see :func:`annealing_targets`."""
    log_p_teacher = masked_log_softmax(teacher_logits, mask, temperature=temperature, dtype=dtype)
    one_hot = F.one_hot(labels.long(), teacher_logits.shape[-1]).to(dtype)
    targets = progress * one_hot + (1.0 - progress) * log_p_teacher.exp()
    if mask is not None:
        targets = targets.masked_fill(~mask, 0.0)
    return targets


def annealing_targets(
    teacher_logits: Tensor,
    labels: Tensor,
    *,
    progress: float,
    temperature: float = 1.0,
    mask: Tensor | None = None,
) -> Tensor:
    """Teacher-annealing targets: ``lam * onehot(y) + (1 - lam) * softmax(z / T)``.

    Args:
        teacher_logits: Combined teacher logits z, (B, C) or (B, H, C).
        labels: (B,) or (B, H) gold class indices in [0, C).
        progress: lam in [0, 1], the fraction of training done. 0 gives the teacher's
            softmax, 1 the one-hot gold label.
        temperature: T > 0 of the teacher softmax (BAM uses 1).
        mask: Optional bool (B, C) / (B, H, C), True = valid position; the teacher
            softmax runs over valid positions and targets are 0 at the others.

    Returns:
        Target probabilities (B, C) or (B, H, C), summing to 1 over C, in float32
        (float64 for float64 input).

    Raises:
        ValueError: on progress outside [0, 1], T <= 0, bad shapes, NaN/inf teacher
            logits, or labels out of [0, C) or at masked positions.
    """
    check_fraction("progress", progress)
    check_temperature(temperature)
    check_logits(teacher_logits, "teacher_logits")
    check_labels_and_mask(labels, mask, logits=teacher_logits, name="teacher_logits")
    check_values(labels, mask, num_classes=teacher_logits.shape[-1], teacher_logits=teacher_logits)
    return _targets(
        teacher_logits,
        labels,
        mask,
        progress=progress,
        temperature=temperature,
        dtype=compute_dtype(teacher_logits),
    )


def annealing_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    labels: Tensor,
    *,
    progress: float,
    temperature: float = 1.0,
    mask: Tensor | None = None,
    reduction: str = "mean",
) -> Tensor:
    """Teacher-annealing loss: ``-sum_c target[c] * log softmax(s)[c]``.

    ``target = lam * onehot(y) + (1 - lam) * softmax(z / T)`` (see
    :func:`annealing_targets`); the student softmax is at temperature 1. Multi-head
    losses are averaged over heads.

    Args:
        student_logits: (B, C) or (B, H, C).
        teacher_logits: Combined teacher logits, same shape as ``student_logits``.
        labels: (B,) or (B, H) gold class indices in [0, C).
        progress: lam in [0, 1] (``step / total_steps``).
        temperature: T > 0 of the teacher softmax only.
        mask: Optional bool (B, C) / (B, H, C), True = valid position.
        reduction: "mean" (over batch), "sum" (over batch) or "none" (per example, (B,)).

    Returns:
        The loss in float32 (float64 for float64 inputs): a scalar, or (B,) for "none".

    Raises:
        ValueError: as :func:`annealing_targets`, plus an unknown reduction or student
            and teacher shapes that differ.
    """
    check_fraction("progress", progress)
    check_temperature(temperature)
    check_reduction(reduction)
    check_pair(student_logits, teacher_logits)
    check_labels_and_mask(labels, mask, logits=student_logits, name="student_logits")
    check_values(labels, mask, num_classes=teacher_logits.shape[-1], teacher_logits=teacher_logits)
    return annealing_unchecked(student_logits, teacher_logits, labels, progress=progress,
                               temperature=temperature, mask=mask, reduction=reduction)


def annealing_unchecked(
    student_logits: Tensor,
    teacher_logits: Tensor,
    labels: Tensor,
    *,
    progress: float,
    temperature: float = 1.0,
    mask: Tensor | None = None,
    reduction: str = "mean",
) -> Tensor:
    """:func:`annealing_loss` without its checks (inputs validated once, at load time)."""
    dtype = compute_dtype(student_logits, teacher_logits)
    targets = _targets(
        teacher_logits, labels, mask, progress=progress, temperature=temperature, dtype=dtype
    )
    log_p_student = masked_log_softmax(student_logits, mask, dtype=dtype)
    terms = targets * log_p_student
    if mask is not None:
        terms = terms.masked_fill(~mask, 0.0)
    return reduce_loss(-terms.sum(dim=-1), reduction)
