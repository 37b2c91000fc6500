"""SQuAD v1.1 / v2.0 questions for span extraction, read from JSON, JSONL or Parquet.

Accepted files:

- ``.json``: the official layout ``{"version", "data": [{"title", "paragraphs": [{"context",
  "qas": [{"id", "question", "answers": [{"text", "answer_start"}], "is_impossible"?}]}]}]}``
  (v1.1 has no ``is_impossible``: every question is answerable).
- ``.jsonl`` (one object per line) and ``.parquet``: one row per question in the Hugging
  Face ``squad_v2`` layout, columns ``id``, ``question``, ``context``, ``answers``
  (``{"text": [...], "answer_start": [...]}``; empty lists = unanswerable), optional
  ``title`` and ``is_impossible`` (which must then agree with the answers).

Every answer is checked: ``context[answer_start : answer_start + len(text)] == text``.
Question ids are unique; an unanswerable question has no answers and an answerable one at
least one. Any violation is a one-line :class:`DataError` naming the file and question.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from raykd.data.checks import DataError, describe_error
from raykd.data.paths import open_data, read_data

SQUAD_SUFFIXES = (".json", ".jsonl", ".parquet")
"""File suffixes :func:`read_squad` accepts."""
SHOWN_CHARS = 40
"""Longest excerpt of a file's text repeated in an error message."""


@dataclass(frozen=True)
class SquadExample:
    """One question about one context.

    Attributes:
        id: The question id (unique in a file).
        question: The question text.
        context: The passage the answer is taken from.
        answers: Gold answers ``(text, start)``, ``start`` the character offset in
            ``context``; empty for an unanswerable question. Training uses the first.
        is_impossible: True when the context does not answer the question (SQuAD v2.0).
        title: The article's title ('' when the source has none); splits may group by it.
    """

    id: str
    question: str
    context: str
    answers: tuple[tuple[str, int], ...]
    is_impossible: bool
    title: str = ""


def shown(text: object) -> str:
    """``repr`` of a value read from a file, cut to :data:`SHOWN_CHARS` characters."""
    value = str(text)
    return repr(value if len(value) <= SHOWN_CHARS else value[:SHOWN_CHARS] + "...")


def make_example(where: str, *, qid: object, question: object, context: object,
                 answers: Iterable[tuple[object, object]], is_impossible: bool | None,
                 title: object = "") -> SquadExample:
    """A checked :class:`SquadExample`; ``is_impossible=None`` means "no answers".

    Raises:
        DataError: on a missing or non-text field, an empty context, answers on an
            unanswerable question (or none on an answerable one), or an answer whose text
            is not found at its ``answer_start``.
    """
    if not isinstance(qid, str | int) or isinstance(qid, bool) or str(qid) == "":
        raise DataError(f"{where}: a question has id {shown(qid)}; expected a non-empty "
                        "string id")
    qid = str(qid)
    for name, value in (("question", question), ("context", context)):
        if not isinstance(value, str) or not value.strip():
            raise DataError(f"{where}: question {shown(qid)} has {name} {shown(value)}; "
                            "expected non-empty text")
    assert isinstance(question, str) and isinstance(context, str)
    checked = tuple(_checked_answer(where, qid, context, text, start) for text, start in answers)
    if is_impossible is None:
        is_impossible = not checked
    if is_impossible and checked:
        raise DataError(f"{where}: question {shown(qid)} is_impossible but has {len(checked)} "
                        "answers; an unanswerable question must have none")
    if not is_impossible and not checked:
        raise DataError(f"{where}: question {shown(qid)} has no answers and is not "
                        "is_impossible; an answerable question needs at least one answer")
    return SquadExample(qid, question, context, checked, bool(is_impossible),
                        "" if title is None else str(title))


def _checked_answer(where: str, qid: str, context: str, text: object,
                    start: object) -> tuple[str, int]:
    if not isinstance(text, str) or not text.strip():
        raise DataError(f"{where}: question {shown(qid)} has answer text {shown(text)}; "
                        "expected non-empty text")
    if not isinstance(start, int) or isinstance(start, bool) or start < 0:
        raise DataError(f"{where}: question {shown(qid)} has answer_start {shown(start)}; "
                        "expected a character offset (an integer >= 0)")
    found = context[start:start + len(text)]
    if found != text:
        raise DataError(f"{where}: question {shown(qid)}: answer text {shown(text)} is not at "
                        f"answer_start {start} of its context (found {shown(found)}); "
                        "answer_start must be the character offset of the text")
    return text, start


def check_unique(where: str, examples: list[SquadExample]) -> list[SquadExample]:
    """``examples`` unchanged; DataError naming the first repeated question id."""
    seen: set[str] = set()
    for ex in examples:
        if ex.id in seen:
            raise DataError(f"{where}: question id {shown(ex.id)} occurs more than once; "
                            "ids must be unique")
        seen.add(ex.id)
    if not examples:
        raise DataError(f"{where} holds no questions; expected at least one")
    return examples


def _field(where: str, obj: object, name: str, kind: type, what: str) -> Any:
    if not isinstance(obj, Mapping) or name not in obj:
        raise DataError(f"{where}: {what} has no {name!r} field; expected the SQuAD layout "
                        "data[].paragraphs[].qas[]")
    value = obj[name]
    if not isinstance(value, kind):
        raise DataError(f"{where}: field {name!r} of {what} is a {type(value).__name__}; "
                        f"expected a {kind.__name__}")
    return value


def parse_squad_json(document: object, where: str) -> list[SquadExample]:
    """The questions of a parsed SQuAD v1.1/v2.0 JSON document (see the module docstring)."""
    examples: list[SquadExample] = []
    for a, article in enumerate(_field(where, document, "data", list, "the file")):
        title = article.get("title", "") if isinstance(article, Mapping) else ""
        paragraphs = _field(where, article, "paragraphs", list, f"data[{a}]")
        for p, paragraph in enumerate(paragraphs):
            at = f"data[{a}].paragraphs[{p}]"
            context = _field(where, paragraph, "context", str, at)
            for q, qa in enumerate(_field(where, paragraph, "qas", list, at)):
                qat = f"{at}.qas[{q}]"
                answers = _field(where, qa, "answers", list, qat)
                impossible = qa.get("is_impossible", False)
                if not isinstance(impossible, bool):
                    raise DataError(f"{where}: is_impossible of {qat} is {shown(impossible)}; "
                                    "expected true or false")
                pairs = [(_field(where, ans, "text", object, f"{qat}.answers[{i}]"),
                          _field(where, ans, "answer_start", object, f"{qat}.answers[{i}]"))
                         for i, ans in enumerate(answers)]
                examples.append(make_example(
                    where, qid=_field(where, qa, "id", object, qat),
                    question=_field(where, qa, "question", object, qat), context=context,
                    answers=pairs, is_impossible=impossible, title=title))
    return check_unique(where, examples)


ROW_COLUMNS = ("id", "question", "context", "answers")
"""Columns every JSONL/Parquet row must have (``title``, ``is_impossible`` optional)."""


def parse_squad_rows(rows: Iterable[Mapping[str, Any]], where: str) -> list[SquadExample]:
    """The questions of rows in the Hugging Face ``squad_v2`` layout (module docstring)."""
    examples = []
    for i, row in enumerate(rows):
        missing = [c for c in ROW_COLUMNS if not isinstance(row, Mapping) or c not in row]
        if missing:
            raise DataError(f"{where}: row {i} has no {', '.join(missing)}; expected columns "
                            f"{', '.join(ROW_COLUMNS)} (answers = {{text: [...], "
                            "answer_start: [...]}})")
        answers = row["answers"]
        if not isinstance(answers, Mapping) or not {"text", "answer_start"} <= set(answers):
            raise DataError(f"{where}: row {i} has answers {shown(answers)}; expected "
                            "{text: [...], answer_start: [...]}")
        try:
            texts, starts = list(answers["text"]), list(answers["answer_start"])
        except TypeError:
            raise DataError(f"{where}: row {i} has answers {shown(answers)}; expected lists: "
                            "{text: [...], answer_start: [...]}") from None
        if len(texts) != len(starts):
            raise DataError(f"{where}: row {i} has {len(texts)} answer texts but "
                            f"{len(starts)} answer_start values; expected one each")
        impossible = row.get("is_impossible")
        if impossible is not None and not isinstance(impossible, bool):
            raise DataError(f"{where}: row {i} has is_impossible {shown(impossible)}; "
                            "expected true or false")
        examples.append(make_example(
            where, qid=row["id"], question=row["question"], context=row["context"],
            answers=zip(texts, [_as_int(s) for s in starts], strict=True),
            is_impossible=impossible, title=row.get("title", "")))
    return check_unique(where, examples)


def _as_int(value: object) -> object:
    """Parquet integers come back as numpy scalars: make them ``int`` (others unchanged)."""
    if hasattr(value, "dtype") and getattr(value.dtype, "kind", "") in "iu":
        return int(value)  # type: ignore[call-overload]
    return value


def read_squad(path: str | os.PathLike[str]) -> list[SquadExample]:
    """Read a SQuAD v1.1/v2.0 ``.json`` file, or ``.jsonl``/``.parquet`` rows (module docstring).

    Raises:
        DataError: on an unreadable file, a wrong layout or any bad question (one line).
    """
    where = repr(os.fspath(path))
    suffix = Path(path).suffix.lower()
    if suffix not in SQUAD_SUFFIXES:
        raise DataError(f"{where} is not a SQuAD file; expected a file ending in "
                        f"{', '.join(SQUAD_SUFFIXES)}")
    if suffix == ".parquet":
        return parse_squad_rows(_parquet_rows(path, where), where)
    try:
        text = read_data(path).decode("utf-8")
        if suffix == ".json":
            return parse_squad_json(json.loads(text), where)
        rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise DataError(f"could not read {where} as {suffix}: {describe_error(exc)}") from None
    return parse_squad_rows(rows, where)


def _parquet_rows(path: str | os.PathLike[str], where: str) -> list[dict[str, Any]]:
    import pyarrow.parquet as pq

    try:
        with open_data(path) as handle:
            return pq.read_table(handle).to_pylist()
    except (MemoryError, DataError):
        raise
    except Exception as exc:  # any parse failure means the file is unreadable
        raise DataError(f"could not read {where} as .parquet: {describe_error(exc)}") from exc
