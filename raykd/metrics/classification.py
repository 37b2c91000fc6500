"""Classification metrics: accuracy and macro-F1 (numpy only).

For class ``c`` over ``N`` examples with predictions ``pred`` and true classes ``y``:
``TP_c = #(pred = c and y = c)``, ``FP_c = #(pred = c and y != c)``,
``FN_c = #(pred != c and y = c)``; precision ``P_c = TP_c / (TP_c + FP_c)``, recall
``R_c = TP_c / (TP_c + FN_c)`` and

    F1_c = 2 P_c R_c / (P_c + R_c) = 2 TP_c / (2 TP_c + FP_c + FN_c),

with ``F1_c = 0`` wherever the ratio is 0/0: a class never predicted and never true, and a
class with ``TP_c = 0``. Macro-F1 is the plain mean of ``F1_c`` over **all** ``C`` classes
``0..C-1`` (a class absent from both ``pred`` and ``y`` counts as 0 and lowers the mean, so
the number is comparable across splits whatever classes they hold). This is scikit-learn's
``f1_score(y, pred, average='macro', labels=range(C), zero_division=0)``.
"""

from __future__ import annotations

import numpy as np


def _predictions(logits_or_pred: np.ndarray) -> np.ndarray:
    """Class numbers ``(N,)``: the arg-max of logits ``(N, C)``, or the predictions themselves."""
    values = np.asarray(logits_or_pred)
    if values.ndim == 2:
        return values.argmax(axis=1)
    if values.ndim != 1:
        raise ValueError(f"expected logits (N, C) or predictions (N,); got shape {values.shape}")
    return values


def _checked(pred: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``pred`` and ``y`` as int64 ``(N,)`` of the same length."""
    pred, y = np.asarray(pred), np.asarray(y)
    if y.ndim != 1 or pred.shape != y.shape:
        raise ValueError(f"predictions {pred.shape} and labels {y.shape} must both be (N,)")
    if pred.dtype.kind not in "iub" or y.dtype.kind not in "iub":
        raise ValueError(f"predictions ({pred.dtype}) and labels ({y.dtype}) must be integers")
    return pred.astype(np.int64), y.astype(np.int64)


def accuracy(logits_or_pred: np.ndarray, y: np.ndarray) -> float:
    """Share of examples whose predicted class equals ``y``: ``mean(pred == y)``.

    Args:
        logits_or_pred: Logits ``(N, C)`` (the prediction is their arg-max) or classes ``(N,)``.
        y: True classes ``(N,)``.

    Returns:
        A number in [0, 1]; NaN for ``N = 0``.
    """
    pred, y = _checked(_predictions(logits_or_pred), y)
    return float(np.mean(pred == y)) if len(y) else float("nan")


def f1_per_class(pred: np.ndarray, y: np.ndarray, num_classes: int) -> np.ndarray:
    """``F1_c`` for ``c = 0..C-1`` (see the module docstring), float64 ``(C,)``.

    Raises:
        ValueError: For shapes that differ, non-integer classes, or classes outside ``0..C-1``.
    """
    pred, y = _checked(_predictions(pred), y)
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1; got {num_classes}")
    if len(y) and (min(pred.min(), y.min()) < 0 or max(pred.max(), y.max()) >= num_classes):
        raise ValueError(f"classes must be in 0..{num_classes - 1}")
    tp = np.bincount(y[pred == y], minlength=num_classes).astype(np.float64)
    predicted = np.bincount(pred, minlength=num_classes).astype(np.float64)  # TP + FP
    true = np.bincount(y, minlength=num_classes).astype(np.float64)  # TP + FN
    denominator = predicted + true  # 2 TP + FP + FN
    return np.divide(2 * tp, denominator, out=np.zeros(num_classes), where=denominator > 0)


def macro_f1(pred: np.ndarray, y: np.ndarray, num_classes: int) -> float:
    """Macro-F1: the mean of ``F1_c`` over all ``C`` classes (see the module docstring).

    Args:
        pred: Predicted classes ``(N,)`` (or logits ``(N, C)``: their arg-max).
        y: True classes ``(N,)``.
        num_classes: ``C``; classes are ``0..C-1``.

    Returns:
        A number in [0, 1] (0 for ``N = 0``).
    """
    return float(f1_per_class(pred, y, num_classes).mean())
