"""The per-step loss of a method, resolved once: :func:`method_loss` (imports torch only).

:func:`raykd.losses.distillation_loss` checks every input on every call (shapes, label
range, NaN teacher logits: one host sync each call). A training loop knows its method and
hyperparameters before the first step and validates its data once when it is loaded
(:func:`raykd.train.loop.check_loop_data`), so :func:`method_loss` checks the
hyperparameters once and returns a closure over the unchecked math: the very same
operations as :func:`~raykd.losses.distillation_loss`, without the per-step checks.
"""

from collections.abc import Callable, Sequence

from torch import Tensor

from raykd.losses.annealing import annealing_unchecked
from raykd.losses.ensemble import combine_unchecked, wkd_weights_unchecked
from raykd.losses.kd import (
    check_fraction,
    check_temperature,
    kd_unchecked,
    supervised_unchecked,
)
from raykd.losses.weights import as_teacher_weights, per_teacher

LossFn = Callable[..., Tensor]
"""``loss(student_logits (B, C), teacher_logits_per_teacher (M, B, C) or None, labels (B,),
progress, mask=None)`` -> the scalar mean loss. Span heads: logits (B, 2, L), teachers
(M, B, 2, L), labels (B, 2) and ``mask`` a bool (B, 1, L) (or (B, 2, L)) of the valid
positions, which every softmax of every method leaves out (WKD's correctness then is per
head, over the valid positions)."""

METHODS: tuple[str, ...] = ("none", "kd", "wkd", "annealing")
"""The distillation methods :func:`method_loss` and ``distillation_loss`` accept."""


def method_loss(method: str, *, temperature: float = 1.0, alpha: float = 0.5,
                incorrect_weight: float = 1.0,
                teacher_weights: Tensor | Sequence[float] | None = None) -> LossFn:
    """The loss of one method with its hyperparameters checked once, for a training step.

    Equal, operation for operation, to ``distillation_loss(method, s, z, y, temperature=T,
    alpha=alpha, incorrect_weight=W, progress=lam, teacher_weights=q, mask=mask)`` (``mask``
    None, the default, is the unmasked loss, bit for bit). The
    inputs are not checked per call: the caller guarantees labels in [0, C), finite teacher
    logits and shapes that agree, ``len(q) == M`` included (checked once when the data were
    loaded).

    Args:
        teacher_weights: Optional per-teacher weights q (M,) under the ensemble (see
            :func:`raykd.losses.accuracy_weights`); ignored by ``none``.

    Raises:
        ValueError: on an unknown method, T <= 0, alpha outside [0, 1], W outside (0, 1], or
            teacher_weights that are not finite, >= 0 with a positive sum.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if method == "none":
        return lambda s, z, y, lam, mask=None: supervised_unchecked(s, y, mask=mask)
    check_temperature(temperature)
    prior = _OnDevice(as_teacher_weights(teacher_weights))
    if method == "annealing":
        return lambda s, z, y, lam, mask=None: annealing_unchecked(
            s, prior.combine(_need(z, method)), y, progress=lam, temperature=temperature,
            mask=mask)
    check_fraction("alpha", alpha)
    if method == "kd":
        return lambda s, z, y, lam, mask=None: kd_unchecked(
            s, prior.combine(_need(z, method)), y, temperature=temperature, alpha=alpha,
            mask=mask)
    if not 0.0 < incorrect_weight <= 1.0:
        raise ValueError(f"incorrect_weight must be in (0, 1], got {incorrect_weight!r}")

    def wkd(s: Tensor, z: Tensor | None, y: Tensor, lam: float,
            mask: Tensor | None = None) -> Tensor:
        z = _need(z, method)
        weights = wkd_weights_unchecked(z, y, incorrect_weight=incorrect_weight, mask=mask,
                                        teacher_weights=prior.on(z))
        return kd_unchecked(s, combine_unchecked(z, weights), y, temperature=temperature,
                            alpha=alpha, mask=mask)

    return wkd


class _OnDevice:
    """Per-teacher weights (or None), copied once to each device the logits arrive on."""

    def __init__(self, weights: Tensor | None) -> None:
        self.weights = weights
        self._copies: dict[object, Tensor] = {}

    def on(self, z: Tensor) -> Tensor | None:
        """The weights on ``z``'s device (no copy per step: no host sync)."""
        if self.weights is None:
            return None
        if z.device not in self._copies:
            self._copies[z.device] = self.weights.to(z.device)
        return self._copies[z.device]

    def combine(self, z: Tensor) -> Tensor:
        """``(1/M) sum_m q_m z_m``; the plain average without weights."""
        weights = self.on(z)
        return combine_unchecked(z, None if weights is None else per_teacher(weights, z[..., 0],
                                                                              weights.dtype))


def _need(teacher_logits: Tensor | None, method: str) -> Tensor:
    if teacher_logits is None:
        raise ValueError(f"method {method!r} needs teacher logits of shape (M, B, C), got None")
    return teacher_logits
