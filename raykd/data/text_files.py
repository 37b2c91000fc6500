"""User text files as text classification data: ``.csv``, ``.parquet`` and ``.jsonl``.

The rules (how the rows become bytes and splits: :mod:`raykd.data.text`):

- **reading**: a ``.csv`` has a header row and is UTF-8 (read by pandas: a blank cell, or one
  pandas reads as missing such as ``NA``, is a missing value); a ``.parquet`` file's columns
  keep their stored types; a ``.jsonl`` file holds one JSON object per line (UTF-8; blank
  lines skipped), its keys are the columns and a key absent from a line is a missing value
  (a lone surrogate escape such as ``"\\ud800"``, which is no character, becomes ``?``).
  Every file is opened through :mod:`raykd.data.paths`'s checks.
- **text columns**: ``text_column`` (and, for pairs, ``text_pair_column``) must hold strings;
  a column of numbers, booleans, bytes or nested values is refused by name.
- **labels**: ``label_column``, text, integers or booleans, encoded as tables encode them
  (:func:`~raykd.data.table_columns.encode_labels`): rows without a label are dropped and
  counted (``TextPrep.rows``).
- **empty texts**: a labelled row whose text (or pair text) is missing, empty or only
  whitespace is an error naming how many rows have one; remove or fill them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from raykd.data.checks import DataError, describe_error, shown_names
from raykd.data.paths import open_data
from raykd.data.table_columns import encode_labels
from raykd.data.tables import TABLE_SUFFIXES, read_table
from raykd.data.text import TextRaw

if TYPE_CHECKING:
    import pandas as pd

TEXT_SUFFIXES = (*TABLE_SUFFIXES, ".jsonl")
"""Suffixes of user text files (``.jsonl`` is read as text data only)."""
JSONL_EXAMPLE = '{"text": "...", "label": "sport"}'


def read_jsonl(path: Path) -> pd.DataFrame:
    """A ``.jsonl`` file (one JSON object per line) as a frame; DataError naming the line."""
    import pandas as pd

    where = repr(str(path))
    records = []
    with open_data(path) as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError as exc:  # invalid JSON or invalid UTF-8
                raise DataError(f"could not read {where} as .jsonl: line {number} is not JSON "
                                f"({describe_error(exc)}); expected one JSON object per line, "
                                f"e.g. {JSONL_EXAMPLE}") from None
            if not isinstance(record, dict):
                raise DataError(f"{where} line {number} holds a JSON {type(record).__name__}, "
                                "not an object; expected one JSON object per line, e.g. "
                                f"{JSONL_EXAMPLE}")
            records.append({key: _valid_utf8(value) for key, value in record.items()})
    if not records:
        raise DataError(f"{where} has no rows; expected one JSON object per line, e.g. "
                        f"{JSONL_EXAMPLE}")
    try:
        return pd.DataFrame.from_records(records)
    except (ValueError, TypeError, UnicodeError) as exc:  # e.g. a surrogate nested in a list
        raise DataError(f"could not read {where} as .jsonl: {describe_error(exc)}") from None


def _valid_utf8(value: object) -> object:
    """A string with its lone surrogates (JSON may escape ``\\ud800``) as ``?``; other values
    as they are."""
    if isinstance(value, str):
        return value.encode("utf-8", errors="replace").decode("utf-8")
    return value


def read_text_file(path: Path) -> pd.DataFrame:
    """A ``.csv``, ``.parquet`` or ``.jsonl`` file as a frame with string column names."""
    suffix = path.suffix.lower()
    if suffix not in TEXT_SUFFIXES:
        raise DataError(f"data.text_column applies to {', '.join(TEXT_SUFFIXES)} files; "
                        f"{str(path)!r} is not one")
    frame = read_jsonl(path) if suffix == ".jsonl" else read_table(path)
    frame.columns = [str(c) for c in frame.columns]
    return frame


def check_columns(columns: list[str], *, text_column: str, text_pair_column: str | None,
                  label_column: str, where: str) -> None:
    """DataError when a named column is missing or named twice."""
    roles = [("data.text_column", text_column), ("data.text_pair_column", text_pair_column),
             ("data.label_column", label_column)]
    named = [(role, name) for role, name in roles if name is not None]
    for i, (role, name) in enumerate(named):
        if name not in columns:
            raise DataError(f"{role} {name!r} not found in {where}; columns found: "
                            f"{shown_names(columns)}; set {role} to one of them")
        for other, same in named[:i]:
            if same == name:
                raise DataError(f"{other} and {role} both name column {name!r} of {where}; "
                                "each must be a different column")


def text_values(values: pd.Series, role: str, where: str) -> list[str]:
    """A column's values as strings (missing ones as ``''``); DataError when it holds
    anything but text."""
    import pandas as pd

    api = pd.api.types
    what = f"{role} {str(values.name)!r} in {where}"
    accepted = f"{role} must name a column of strings"
    if (api.is_bool_dtype(values) or api.is_numeric_dtype(values)
            or api.is_datetime64_any_dtype(values)):
        raise DataError(f"{what} holds {values.dtype} values, not text; {accepted}")
    missing = values.isna().to_numpy()
    for row, (value, absent) in enumerate(zip(values.tolist(), missing, strict=True), 1):
        if not absent and not isinstance(value, str):
            raise DataError(f"{what} holds a {type(value).__name__} value (data row {row}), not "
                            f"text; {accepted}")
    return ["" if absent else value for value, absent in zip(values.tolist(), missing, strict=True)]


def _check_not_empty(slots: list[list[str]], names: list[str], rows: np.ndarray,
                     where: str) -> None:
    """DataError when a labelled row has an empty (or whitespace-only) text in any slot."""
    for name, texts in zip(names, slots, strict=True):
        empty = [i for i, t in enumerate(texts) if not t.replace("\0", "").strip()]
        if empty:
            raise DataError(f"text column {name!r} in {where}: {len(empty)} of {len(texts)} "
                            f"labelled rows have an empty text (missing, empty or only whitespace; "
                            f"first at data row {int(rows[empty[0]]) + 1}); every example needs "
                            "text: fill those rows or remove them")


def load_text_file(path: Path, *, text_column: str, text_pair_column: str | None,
                   label_column: str) -> TextRaw:
    """Read a user text file, check its columns and number its classes (see the rules)."""
    where = repr(str(path))
    frame = read_text_file(path)
    check_columns(list(frame.columns), text_column=text_column, text_pair_column=text_pair_column,
                  label_column=label_column, where=where)
    names = [text_column] + ([] if text_pair_column is None else [text_pair_column])
    roles = ["data.text_column", "data.text_pair_column"]
    slots = [text_values(frame[name], role, where)
             for name, role in zip(names, roles, strict=False)]
    codes, class_names, keep = encode_labels(frame[label_column], where, label_column)
    rows = np.flatnonzero(keep)
    slots = [[texts[i] for i in rows] for texts in slots]
    _check_not_empty(slots, names, rows, where)
    counts = {"read": len(keep), "dropped_missing_label": int((~keep).sum()), "used": len(rows)}
    return TextRaw(texts=list(zip(*slots, strict=True)), labels=codes, class_names=class_names,
                   source=str(path), where=where,
                   columns=(text_column, text_pair_column, label_column), rows=counts)
