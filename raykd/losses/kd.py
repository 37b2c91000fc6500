"""Hinton-style knowledge-distillation loss and the checks the other losses share.

Shapes: logits are ``(B, C)`` (B examples, C classes) or ``(B, H, C)`` for H heads (e.g.
the start and end heads of span extraction); labels are ``(B,)`` or ``(B, H)`` class
indices; an optional ``mask`` is a bool tensor shaped like the logits, ``True`` at valid
positions. Invalid positions are pushed to the smallest finite float before every
softmax, so they get probability 0 and no NaN arises, and their loss terms are 0.

Losses are computed in float32 (float64 when an input is float64), so float16 and
bfloat16 logits are accepted; the returned loss has that compute dtype.

Public here: :func:`kd_loss` and :func:`check_finite_logits` (re-exported by
``raykd.losses``). The ``check_*`` helpers and the primitives are shared with the sibling
modules and may change.
"""

import math

import torch
from torch import Tensor
from torch.nn import functional as F

REDUCTIONS: tuple[str, ...] = ("mean", "sum", "none")


# --- hyperparameter checks ---------------------------------------------------------


def check_temperature(temperature: float) -> None:
    """Raise ValueError unless ``temperature`` is a finite number > 0."""
    if not (math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")


def check_fraction(name: str, value: float) -> None:
    """Raise ValueError unless ``value`` lies in [0, 1] (NaN is rejected)."""
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value!r}")


def check_reduction(reduction: str) -> None:
    """Raise ValueError unless ``reduction`` is one of :data:`REDUCTIONS`."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")


# --- shape and value checks --------------------------------------------------------


def check_logits(logits: Tensor, name: str) -> None:
    """Check that ``logits`` is a floating tensor of shape (B, C) or (B, H, C)."""
    if logits.dim() not in (2, 3) or logits.shape[-1] == 0:
        raise ValueError(
            f"{name} must have shape (B, C) or (B, H, C) with C >= 1, "
            f"got shape {tuple(logits.shape)}"
        )
    if not logits.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got dtype {logits.dtype}")


def check_pair(student_logits: Tensor, teacher_logits: Tensor) -> None:
    """Check the student and (combined) teacher logits: valid and of the same shape."""
    check_logits(student_logits, "student_logits")
    check_logits(teacher_logits, "teacher_logits")
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"student_logits shape {tuple(student_logits.shape)} and teacher_logits shape "
            f"{tuple(teacher_logits.shape)} must be equal"
        )


def check_labels_and_mask(
    labels: Tensor, mask: Tensor | None, *, logits: Tensor, name: str, leading: int = 0
) -> None:
    """Check the shapes and dtypes of ``labels`` and ``mask`` against ``logits``.

    Args:
        labels: Integer class indices, expected shape ``logits.shape[leading:-1]``.
        mask: None, or a bool tensor of shape ``logits.shape[leading:]``.
        logits: The logits the labels index into.
        name: The logits' argument name, used in messages.
        leading: Leading dims of ``logits`` that labels do not have (1 for the teacher
            dim M of per-teacher logits ``(M, B, C)``).
    """
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise ValueError(f"labels must be an integer tensor (int64), got dtype {labels.dtype}")
    expected = tuple(logits.shape[leading:-1])
    if tuple(labels.shape) != expected:
        raise ValueError(
            f"labels shape {tuple(labels.shape)} does not fit {name} shape "
            f"{tuple(logits.shape)}: expected labels of shape {expected}"
        )
    if mask is None:
        return
    if mask.dtype != torch.bool:
        raise ValueError(f"mask must be a bool tensor (True = valid), got dtype {mask.dtype}")
    if tuple(mask.shape) != tuple(logits.shape[leading:]):
        raise ValueError(
            f"mask shape {tuple(mask.shape)} does not fit {name} shape "
            f"{tuple(logits.shape)}: expected mask of shape {tuple(logits.shape[leading:])}"
        )


def _nonfinite_message(name: str, count: int) -> str:
    return (
        f"{name} contain NaN/inf at {count} positions; expected finite values "
        "(positions where mask is False are not checked)"
    )


def check_finite_logits(
    teacher_logits: Tensor, *, name: str = "teacher logits", mask: Tensor | None = None
) -> None:
    """Raise ValueError if ``teacher_logits`` holds NaN or inf at a valid position.

    Args:
        teacher_logits: Logits of any shape, e.g. (B, C) or (M, B, H, C).
        name: What to call the tensor in the message.
        mask: Optional bool tensor broadcastable to the logits, ``True`` = valid;
            positions where it is False are not checked (they may hold -inf padding).

    Raises:
        ValueError: "<name> contain NaN/inf at N positions; ...".
    """
    finite = torch.isfinite(teacher_logits)
    if mask is not None:
        finite = finite | ~mask
    if not bool(finite.all()):
        raise ValueError(_nonfinite_message(name, int((~finite).sum())))


def check_values(
    labels: Tensor,
    mask: Tensor | None,
    *,
    num_classes: int,
    teacher_logits: Tensor | None = None,
    name: str = "teacher logits",
) -> None:
    """Check teacher finiteness, label range and labels at valid positions, in one sync.

    Shapes must already be checked. ``mask`` (shape of one teacher's logits) broadcasts
    over a leading teacher dim M of ``teacher_logits``.

    Raises:
        ValueError: on NaN/inf teacher logits at valid positions, labels outside
            [0, C), or labels that point at a masked-out position.
    """
    in_range = (labels >= 0) & (labels < num_classes)
    checks = {"range": in_range.all()}
    if teacher_logits is not None:
        finite = torch.isfinite(teacher_logits)
        if mask is not None:
            finite = finite | ~mask
        checks["finite"] = finite.all()
    if mask is not None:
        index = labels.clamp(0, num_classes - 1).long().unsqueeze(-1)
        label_valid = mask.gather(-1, index).squeeze(-1) | ~in_range
        checks["label_valid"] = label_valid.all()
    if bool(torch.stack(list(checks.values())).all()):
        return
    if "finite" in checks and not bool(checks["finite"]):
        raise ValueError(_nonfinite_message(name, int((~finite).sum())))
    if not bool(checks["range"]):
        raise ValueError(
            f"labels must be class indices in [0, {num_classes}) for {num_classes} classes, "
            f"got {int((~in_range).sum())} out of range "
            f"(min {int(labels.min())}, max {int(labels.max())})"
        )
    raise ValueError(
        f"labels point at {int((~label_valid).sum())} masked-out positions (mask False); "
        "a gold label must be a valid position"
    )


# --- primitives --------------------------------------------------------------------


def compute_dtype(*tensors: Tensor) -> torch.dtype:
    """float64 if any input is float64, else float32 (so half inputs are upcast)."""
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


def masked_log_softmax(
    logits: Tensor, mask: Tensor | None, *, temperature: float = 1.0, dtype: torch.dtype
) -> Tensor:
    """``log_softmax(logits / T)`` over the last dim, in ``dtype``, masked positions excluded.

    Masked positions are filled with the smallest finite value of ``dtype`` *after* the
    division by T (so no overflow to -inf), which gives them probability exactly 0 and
    overwrites any NaN/inf they held.
    """
    scaled = logits.to(dtype)
    if temperature != 1.0:
        scaled = scaled / temperature
    if mask is not None:
        scaled = scaled.masked_fill(~mask, torch.finfo(dtype).min)
    return torch.log_softmax(scaled, dim=-1)


def nll(log_probs: Tensor, labels: Tensor) -> Tensor:
    """``-log p[y]`` per position: (B, C) -> (B,), (B, H, C) -> (B, H)."""
    return -log_probs.gather(-1, labels.long().unsqueeze(-1)).squeeze(-1)


def cross_entropy(log_probs: Tensor, labels: Tensor, reduction: str) -> Tensor:
    """``CE = -log p[y]``, reduced like :func:`reduce_loss` (average over heads first).

    Uses ``F.nll_loss`` for "mean" and "sum", so that on (B, C) it equals
    ``F.cross_entropy`` bit for bit.
    """
    if reduction == "none":
        return reduce_loss(nll(log_probs, labels), reduction)
    flat = F.nll_loss(log_probs.flatten(0, -2), labels.long().flatten(), reduction=reduction)
    if reduction == "sum" and log_probs.dim() == 3:
        return flat / log_probs.shape[1]
    return flat


def kl_divergence(log_p_teacher: Tensor, log_p_student: Tensor, mask: Tensor | None) -> Tensor:
    """``KL(p_t || p_s) = sum_c p_t[c] * (log p_t[c] - log p_s[c])`` over the last dim.

    Terms at masked positions are set to 0 (p_t is 0 there already).
    """
    terms = log_p_teacher.exp() * (log_p_teacher - log_p_student)
    if mask is not None:
        terms = terms.masked_fill(~mask, 0.0)
    return terms.sum(dim=-1)


def reduce_loss(per_position: Tensor, reduction: str) -> Tensor:
    """Average over heads, then reduce over the batch.

    Args:
        per_position: Loss per example (B,) or per (example, head) (B, H).
        reduction: "mean" (scalar), "sum" (scalar) or "none" (per example, (B,)).
    """
    per_example = per_position.mean(dim=-1) if per_position.dim() == 2 else per_position
    if reduction == "none":
        return per_example
    return per_example.mean() if reduction == "mean" else per_example.sum()


# --- losses ------------------------------------------------------------------------


def supervised_loss(
    student_logits: Tensor, labels: Tensor, *, mask: Tensor | None = None, reduction: str = "mean"
) -> Tensor:
    """Cross-entropy ``CE(softmax(s), y)`` with the same masking and reduction as kd_loss."""
    check_reduction(reduction)
    check_logits(student_logits, "student_logits")
    check_labels_and_mask(labels, mask, logits=student_logits, name="student_logits")
    check_values(labels, mask, num_classes=student_logits.shape[-1])
    return supervised_unchecked(student_logits, labels, mask=mask, reduction=reduction)


def supervised_unchecked(
    student_logits: Tensor, labels: Tensor, *, mask: Tensor | None = None, reduction: str = "mean"
) -> Tensor:
    """:func:`supervised_loss` without its checks (labels validated once, at load time)."""
    dtype = compute_dtype(student_logits)
    log_p_student = masked_log_softmax(student_logits, mask, dtype=dtype)
    return cross_entropy(log_p_student, labels, reduction)


def kd_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    labels: Tensor,
    *,
    temperature: float,
    alpha: float,
    mask: Tensor | None = None,
    reduction: str = "mean",
) -> Tensor:
    """Knowledge-distillation loss of Hinton et al. 2015, alpha weighting the teacher.

    ``L = alpha * T^2 * KL(softmax(z / T) || softmax(s / T)) + (1 - alpha) * CE(softmax(s), y)``

    where z are the (already combined, see :func:`combine_teachers`) teacher logits and s
    the student's. The ``T^2`` factor keeps the soft term's gradient scale independent of
    T. ``alpha = 0`` is plain cross-entropy (the KL term is not computed at all);
    ``alpha = 1`` is pure imitation. Multi-head losses are averaged over heads.

    Args:
        student_logits: (B, C) or (B, H, C).
        teacher_logits: Combined teacher logits, same shape as ``student_logits``.
        labels: (B,) or (B, H) integer class indices in [0, C).
        temperature: T > 0.
        alpha: Weight of the soft (teacher) term, in [0, 1].
        mask: Optional bool (B, C) / (B, H, C), True = valid. Invalid positions are left
            out of every softmax (student and teacher) and contribute 0.
        reduction: "mean" (over batch), "sum" (over batch) or "none" (per example, (B,)).

    Returns:
        The loss in float32 (float64 for float64 inputs): a scalar, or (B,) for "none".

    Raises:
        ValueError: on T <= 0, alpha outside [0, 1], an unknown reduction, shapes that
            disagree, NaN/inf teacher logits, or labels out of [0, C) or at masked positions.

    Example:
        >>> loss = kd_loss(s, combine_teachers(z_per_teacher), y, temperature=2.0, alpha=0.5)
    """
    check_temperature(temperature)
    check_fraction("alpha", alpha)
    check_reduction(reduction)
    check_pair(student_logits, teacher_logits)
    check_labels_and_mask(labels, mask, logits=student_logits, name="student_logits")
    check_values(labels, mask, num_classes=teacher_logits.shape[-1], teacher_logits=teacher_logits)
    return kd_unchecked(student_logits, teacher_logits, labels, temperature=temperature,
                        alpha=alpha, mask=mask, reduction=reduction)


def kd_unchecked(
    student_logits: Tensor,
    teacher_logits: Tensor,
    labels: Tensor,
    *,
    temperature: float,
    alpha: float,
    mask: Tensor | None = None,
    reduction: str = "mean",
) -> Tensor:
    """:func:`kd_loss` without its checks, for inputs a caller validated once at load time.

    No host sync: a training step calls it with labels in [0, C) and finite teacher
    logits (checked when they were loaded) and hyperparameters checked once.
    """
    dtype = compute_dtype(student_logits, teacher_logits)
    log_p_student_1 = masked_log_softmax(student_logits, mask, dtype=dtype)
    if alpha == 0.0:
        return cross_entropy(log_p_student_1, labels, reduction)
    log_p_student_t = (
        log_p_student_1
        if temperature == 1.0
        else masked_log_softmax(student_logits, mask, temperature=temperature, dtype=dtype)
    )
    log_p_teacher_t = masked_log_softmax(teacher_logits, mask, temperature=temperature, dtype=dtype)
    per_position = alpha * temperature**2 * kl_divergence(log_p_teacher_t, log_p_student_t, mask)
    if alpha != 1.0:
        per_position = per_position + (1.0 - alpha) * nll(log_p_student_1, labels)
    return reduce_loss(per_position, reduction)
