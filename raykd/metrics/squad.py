"""SQuAD v2.0 evaluation: best spans across a question's windows, EM and F1 in percent.

Scoring follows the official ``evaluate-v2.0.py``:

- ``normalize_answer``: lowercase, drop punctuation, drop the articles a/an/the, collapse
  whitespace.
- exact match: ``normalize(pred) == normalize(gold)``; F1: token-level
  ``2 P R / (P + R)`` over the multiset overlap of normalized tokens (when either side has
  no tokens, F1 = EM). Each question's score is the max over its gold answers; an
  unanswerable question's only gold answer is ''.

Predictions (as in Hugging Face ``postprocess_qa_predictions``): in every window of a
question, the ``n_best`` highest start and end logits over the context positions form
candidate spans with ``start <= end`` and ``end - start + 1 <= max_answer_length``;
a span scores ``start_logit + end_logit`` and the best over all windows wins. The null
score is ``start[0] + end[0]`` (the CLS position), the minimum over the windows. The
question is answered '' when ``null_score - best_span_score > threshold``;
:func:`best_threshold` picks the threshold that maximizes F1 on validation.
"""

from __future__ import annotations

import collections
import re
import string
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from raykd.data.span_prep import SpanPrep, SpanSplit
from raykd.data.squad import SquadExample
from raykd.data.windows import Windows, spans_to_text

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCTUATION = frozenset(string.punctuation)


def normalize_answer(text: str) -> str:
    """Lowercase, remove punctuation, the articles a/an/the and extra whitespace (official)."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(prediction: str, gold: str) -> int:
    """1 if the normalized texts are equal, else 0."""
    return int(normalize_answer(prediction) == normalize_answer(gold))


def f1_score(prediction: str, gold: str) -> float:
    """Token F1 ``2 P R / (P + R)`` of the normalized texts; EM when either has no tokens."""
    pred, ref = normalize_answer(prediction).split(), normalize_answer(gold).split()
    if not pred or not ref:
        return float(pred == ref)
    same = sum((collections.Counter(pred) & collections.Counter(ref)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(ref)
    return 2 * precision * recall / (precision + recall)


def gold_answers(example: SquadExample) -> list[str]:
    """The gold texts, with the official rule: '' alone for an unanswerable question, and
    the answers whose normalized text is empty dropped (as the official script does)."""
    golds = [text for text, _ in example.answers if normalize_answer(text)]
    return golds or [""]


def question_scores(texts: Sequence[str], examples: Sequence[SquadExample]
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Per-question EM (0/1) and F1 in [0, 1]: the max over each question's gold answers."""
    if len(texts) != len(examples):
        raise ValueError(f"{len(texts)} predictions for {len(examples)} questions")
    em = np.array([max(exact_match(t, g) for g in gold_answers(ex))
                   for t, ex in zip(texts, examples, strict=True)], dtype=np.float64)
    f1 = np.array([max(f1_score(t, g) for g in gold_answers(ex))
                   for t, ex in zip(texts, examples, strict=True)], dtype=np.float64)
    return em, f1


def score_texts(texts: Sequence[str], examples: Sequence[SquadExample]) -> dict[str, float]:
    """``{exact, f1, total, HasAns_exact, HasAns_f1, HasAns_total, NoAns_...}`` in percent.

    The HasAns/NoAns keys are left out when there is no such question (as officially).
    """
    em, f1 = question_scores(texts, examples)
    has = np.array([not ex.is_impossible for ex in examples], dtype=bool)
    out: dict[str, float] = {"exact": 100.0 * float(em.mean()) if len(em) else 0.0,
                             "f1": 100.0 * float(f1.mean()) if len(f1) else 0.0,
                             "total": float(len(em))}
    for name, rows in (("HasAns", has), ("NoAns", ~has)):
        if rows.any():
            out[f"{name}_exact"] = 100.0 * float(em[rows].mean())
            out[f"{name}_f1"] = 100.0 * float(f1[rows].mean())
            out[f"{name}_total"] = float(rows.sum())
    return out


@dataclass(frozen=True, eq=False)
class SpanPredictions:
    """Each question's best non-null span and its null score (one entry per question).

    Attributes:
        text: The best span's context text ('' when no span was possible).
        score: float64, the best span's ``start + end`` logit (-inf when none).
        null_score: float64, ``start[0] + end[0]``, the minimum over the question's windows.
    """

    text: tuple[str, ...]
    score: np.ndarray
    null_score: np.ndarray

    @property
    def margin(self) -> np.ndarray:
        """``null_score - score`` per question: answered '' when it exceeds the threshold."""
        return self.null_score - self.score

    def answers(self, threshold: float) -> list[str]:
        """The predicted text per question: '' when ``margin > threshold``, else the span."""
        return [("" if m > threshold else t) for t, m in zip(self.text, self.margin, strict=True)]


def _best_in_window(start: np.ndarray, end: np.ndarray, context: np.ndarray, *, n_best: int,
                    max_answer_length: int) -> tuple[float, int, int]:
    """Best ``(start + end, s, e)`` over n-best context starts/ends; (-inf, 0, 0) if none."""
    positions = np.flatnonzero(context)
    if positions.size == 0:
        return float("-inf"), 0, 0
    s_idx = positions[np.argsort(-start[positions], kind="stable")[:n_best]]
    e_idx = positions[np.argsort(-end[positions], kind="stable")[:n_best]]
    total = start[s_idx][:, None] + end[e_idx][None, :]
    length = e_idx[None, :] - s_idx[:, None] + 1
    total = np.where((length >= 1) & (length <= max_answer_length), total, -np.inf)
    flat = int(np.argmax(total))
    i, j = divmod(flat, total.shape[1])
    return float(total[i, j]), int(s_idx[i]), int(e_idx[j])


def best_spans(logits: np.ndarray, windows: Windows, examples: Sequence[SquadExample], *,
               n_best: int = 20, max_answer_length: int = 30) -> SpanPredictions:
    """Each question's best span over all its windows (module docstring).

    Args:
        logits: (N_win, 2, L) start and end logits of every window, in window order.
        windows: The windows the logits are of (their ``valid``, ``offsets``, ``example``).
        examples: The questions, in the order ``windows.example`` indexes.
        n_best: Start and end candidates per window.
        max_answer_length: Longest span in tokens.

    Returns:
        :class:`SpanPredictions`, one entry per example (an example with no window gets
        score -inf and null score +inf: answered '').
    """
    logits = np.asarray(logits, dtype=np.float64)
    if logits.shape != (len(windows), 2, windows.valid.shape[1]):
        raise ValueError(f"logits shape {logits.shape} does not fit {len(windows)} windows of "
                         f"{windows.valid.shape[1]} tokens: expected (N_win, 2, L)")
    n = len(examples)
    score = np.full(n, -np.inf)
    null = np.full(n, np.inf)
    best: list[tuple[int, int, int]] = [(-1, 0, 0)] * n
    context = windows.valid.copy()
    context[:, 0] = False
    for row in range(len(windows)):
        q = int(windows.example[row])
        null[q] = min(null[q], logits[row, 0, 0] + logits[row, 1, 0])
        value, s, e = _best_in_window(logits[row, 0], logits[row, 1], context[row],
                                      n_best=n_best, max_answer_length=max_answer_length)
        if value > score[q]:
            score[q], best[q] = value, (row, s, e)
    texts = [spans_to_text(windows, examples, [r], [s], [e])[0] if r >= 0 else ""
             for r, s, e in best]
    return SpanPredictions(tuple(texts), score, null)


ALWAYS_ANSWER = 1e30
"""The threshold of data without unanswerable questions (finite: it is written to JSON)."""


def best_threshold(predictions: SpanPredictions, examples: Sequence[SquadExample]) -> float:
    """The no-answer threshold that maximizes F1 (ties: the smallest), e.g. on validation.

    A question is answered with its span iff ``margin <= threshold``, so the candidates
    are the margins themselves, plus one below them all (every question answered '').
    Without any unanswerable question (SQuAD v1.1) every question has an answer: the
    threshold is :data:`ALWAYS_ANSWER` (no margin on any split can pass it).
    """
    if not any(ex.is_impossible for ex in examples):
        return ALWAYS_ANSWER
    span_f1 = question_scores(list(predictions.text), examples)[1]
    null_f1 = question_scores([""] * len(examples), examples)[1]
    margin = predictions.margin
    finite = np.isfinite(margin)
    candidates = np.unique(margin[finite])
    lowest = float(candidates[0]) - 1.0 if candidates.size else 0.0
    best_t, best_f1 = lowest, float(null_f1.sum())
    for t in candidates:
        answered = margin <= t
        total = float(np.where(answered, span_f1, null_f1).sum())
        if total > best_f1 + 1e-12:
            best_t, best_f1 = float(t), total
    return best_t


def evaluate(predictions: SpanPredictions, examples: Sequence[SquadExample], *,
             threshold: float) -> dict[str, float]:
    """SQuAD v2.0 scores in percent (:func:`score_texts`) at ``threshold``, which is included."""
    out = score_texts(predictions.answers(threshold), examples)
    out["threshold"] = float(threshold)
    return out


def squad_scores(logits: np.ndarray, part: SpanSplit,
                 threshold: float | None = None) -> dict[str, float]:
    """SQuAD v2.0 scores in percent of one split's window logits (N_win, 2, L): the best span
    over each question's windows, answered '' when its null margin exceeds ``threshold``
    (None: the threshold that maximizes F1 on this split, as chosen on validation)
    (:func:`best_spans`, :func:`best_threshold`, :func:`evaluate`); the dict includes
    ``threshold``."""
    examples = list(part.examples)
    predictions = best_spans(logits, part.windows, examples)
    if threshold is None:
        threshold = best_threshold(predictions, examples)
    return evaluate(predictions, examples, threshold=threshold)


def span_row(val_logits: np.ndarray, test_logits: np.ndarray, spans: SpanPrep) -> dict[str, Any]:
    """A model's ``span`` entry of ``result.json``: the null threshold chosen on val (max F1),
    and the test scores at it (exact, f1, HasAns_*/NoAns_*, totals), in percent."""
    val = squad_scores(val_logits, spans.parts["val"])
    test = squad_scores(test_logits, spans.parts["test"], threshold=val["threshold"])
    return {"threshold": val["threshold"], "val_f1": val["f1"], "val_exact": val["exact"],
            "test": test}
