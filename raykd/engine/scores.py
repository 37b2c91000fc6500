"""How a teacher, the ensemble or a student scores on its val and test logits (accuracy,
macro-F1 on text, SQuAD EM/F1 on spans), and how those scores read in events and the log."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from raykd.data import Dataset
from raykd.data.span_data import window_accuracy
from raykd.metrics.classification import macro_f1
from raykd.metrics.squad import span_row
from raykd.train.steps import accuracy

__all__ = ["ensemble_accuracy", "model_scores", "span_event_fields", "span_said", "text_f1"]


def text_f1(data: Dataset) -> Callable[[np.ndarray], float | None]:
    """Macro-F1 of (N_test, C) logits on the test split for a text dataset; None otherwise."""
    if getattr(data, "text", None) is None:
        return lambda logits: None
    return lambda logits: macro_f1(logits.argmax(-1), data.test.y, data.num_classes)


def ensemble_accuracy(logits: np.ndarray, y: np.ndarray) -> float:
    """Accuracy of the plain logit average over teachers, logits (M, N, C)."""
    return accuracy(logits.mean(0), y)


def model_scores(data: Dataset, val: np.ndarray, test: np.ndarray) -> dict[str, Any]:
    """A model's (or the ensemble's mean) scores from its val and test logits:
    ``val_accuracy``, ``test_accuracy``, ``test_macro_f1`` (text classification) and ``span``
    (span data: SQuAD v2.0 EM/F1 on test at the no-answer threshold chosen on val,
    :func:`raykd.metrics.squad.span_row`; the accuracies are then the share of windows whose
    start and end arg-max over the valid positions are both right)."""
    if data.spans is None:
        return {"val_accuracy": accuracy(val, data.val.y),
                "test_accuracy": accuracy(test, data.test.y),
                "test_macro_f1": text_f1(data)(test)}

    return {"val_accuracy": window_accuracy(val, data.val.x, data.val.y),
            "test_accuracy": window_accuracy(test, data.test.x, data.test.y),
            "test_macro_f1": None, "span": span_row(val, test, data.spans)}


def span_event_fields(scores: dict[str, Any]) -> dict[str, float | None]:
    """``test_f1``/``test_exact`` of an event from :func:`model_scores` (None without spans)."""
    span = scores.get("span")
    if span is None:
        return {}
    return {"test_f1": span["test"]["f1"], "test_exact": span["test"]["exact"]}


def span_said(scores: dict[str, Any]) -> str:
    """``, test F1 .. / EM ..`` for a span model's line in the log ('' otherwise)."""
    span = scores.get("span")
    if span is None:
        return ""
    return f", test F1 {span['test']['f1']:.2f} / EM {span['test']['exact']:.2f} (SQuAD v2.0)"
