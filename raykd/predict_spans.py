"""Question answering with a saved span student: a SQuAD-format JSON file in, the official
predictions JSON out (``{question id: answer text, or "" for no answer}``).

The student checkpoint's metadata (written by the job: ``preprocessing`` of format
``raykd-span-windows``) says how its windows were made (``max_length``, ``doc_stride``,
``max_query_length``) and the no-answer threshold chosen on validation
(``null_threshold``); the questions are cut into windows with the student's own tokenizer,
and each question's answer is its best span over its windows, or "" when
``null score - best span score`` exceeds the threshold (:mod:`raykd.metrics.squad`). The
input file's answers, if any, are not read: unanswered questions (no ``answers``) are fine.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from raykd.core.atomic_files import atomic_path
from raykd.data.checks import DataError
from raykd.data.paths import read_data
from raykd.data.span_data import window_inputs
from raykd.data.span_prep import SPAN_FORMAT
from raykd.data.squad import SquadExample
from raykd.data.windows import make_windows
from raykd.metrics.squad import best_spans
from raykd.models import load_checkpoint
from raykd.models.checkpoint import checkpoint_info
from raykd.train.steps import predict_logits


def is_span_checkpoint(checkpoint: str | os.PathLike[str]) -> bool:
    """Whether a checkpoint is a span (question answering) student: its metadata carries a
    ``raykd-span-windows`` record (``raykd predict`` then answers a SQuAD-format file)."""
    prep = checkpoint_info(checkpoint).get("preprocessing")
    return isinstance(prep, dict) and prep.get("format") == SPAN_FORMAT


def span_record(checkpoint: str | os.PathLike[str]) -> dict[str, Any]:
    """The span-window record of a student checkpoint; DataError when it has none."""
    prep = checkpoint_info(checkpoint).get("preprocessing")
    if not isinstance(prep, dict) or prep.get("format") != SPAN_FORMAT:
        raise DataError(f"checkpoint {str(checkpoint)!r} is not a span (question answering) "
                        "student: its metadata has no raykd-span-windows record; give a student "
                        "checkpoint of a job on span data (bbc-speakers, SQuAD .json)")
    return prep


def read_questions(path: str | os.PathLike[str]) -> list[SquadExample]:
    """Every question of a SQuAD v1.1/v2.0 ``.json`` file (id, question, context); answers
    are not needed and not read."""
    where = repr(str(path))
    try:
        document = json.loads(read_data(path))
        out = [SquadExample(id=str(qa["id"]), question=str(qa["question"]),
                            context=str(paragraph["context"]), answers=(), is_impossible=True)
               for article in document["data"] for paragraph in article["paragraphs"]
               for qa in paragraph["qas"]]
    except (ValueError, KeyError, TypeError, RecursionError) as err:
        raise DataError(f"{where} is not a SQuAD-format JSON file ({type(err).__name__}: {err}); "
                        "expected {\"data\": [{\"paragraphs\": [{\"context\", \"qas\": [{\"id\", "
                        "\"question\"}]}]}]}") from None
    for q in out:
        if q.id in ("", "None") or not q.question.strip() or q.question == "None" \
                or not q.context.strip() or q.context == "None":
            raise DataError(f"{where}: question {q.id!r} has an empty or null id, question or "
                            "context; each needs text")
    if len({q.id for q in out}) != len(out):
        raise DataError(f"{where} has repeated question ids; each question needs its own id")
    return out


def predict_squad(checkpoint: str | os.PathLike[str], questions: str | os.PathLike[str], *,
                  threshold: float | None = None) -> dict[str, str]:
    """``{question id: answer}`` of a span student over a SQuAD-format file (module docstring);
    ``threshold`` overrides the checkpoint's ``null_threshold``."""
    prep = span_record(checkpoint)
    if threshold is None:
        if not isinstance(prep.get("null_threshold"), int | float):
            raise DataError(f"checkpoint {str(checkpoint)!r} records no no-answer threshold "
                            "(a job's students carry the one chosen on validation); give a "
                            "student of a finished span job")
        threshold = float(prep["null_threshold"])
    for key in ("max_length", "doc_stride", "max_query_length"):
        value = prep.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 8192:
            raise DataError(f"checkpoint {str(checkpoint)!r}: its span record's {key}={value!r} "
                            "is not a window size in [1, 8192]; the checkpoint is damaged")
    examples = read_questions(questions)
    model = load_checkpoint(checkpoint)
    windows = make_windows(examples, model.tokenizer, max_length=int(prep["max_length"]),
                           doc_stride=int(prep["doc_stride"]),
                           max_query_length=int(prep["max_query_length"]))
    logits = predict_logits(model, window_inputs(windows))
    answers = best_spans(logits, windows, examples).answers(threshold)
    return {ex.id: text for ex, text in zip(examples, answers, strict=True)}


def write_predictions(checkpoint: str | os.PathLike[str], questions: str | os.PathLike[str],
                      out: str | os.PathLike[str], *, threshold: float | None = None) -> Path:
    """:func:`predict_squad` written to ``out`` as the official predictions JSON (atomically)."""
    predictions = predict_squad(checkpoint, questions, threshold=threshold)
    path = Path(out)
    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(predictions, indent=2, ensure_ascii=False))
    return path
