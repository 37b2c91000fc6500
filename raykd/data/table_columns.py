"""Which columns of a table a model reads, and its classes: the rules, stated once.

- **Label** (``label_column``): text, integers, booleans or integral floats. Text classes
  are named and numbered in sorted order; integers that are already ``0..C-1`` keep
  their numbers, other integers are numbered in sorted order (``{3, 7}`` -> ``0, 1``)
  and named by their value. Rows whose label is missing are dropped (and counted in the
  report).
- **Features**: every other column, unless ``include`` names exactly the columns to use
  or ``exclude`` names columns to leave out. Numbers and booleans are *numeric*; text and
  ``category`` columns are *categorical*; any other dtype (dates, ...) is dropped with
  its reason. A column that looks like a row index (named ``Unnamed: 0``, ``index``,
  ``id``, ``rownames``, or integers equal to ``0..N-1`` or ``1..N`` in file order) is
  dropped unless ``include`` names it. Columns the training split leaves empty or
  constant, and text columns with more distinct values than ``max_levels`` and than half
  the training rows (identifiers, free text) are dropped when they were not named in
  ``include`` (then an empty column is an error).

Every dropped column is reported with its reason: nothing is dropped silently.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np

from raykd.data.checks import MAX_NUM_CLASSES, DataError, shown_names

if TYPE_CHECKING:
    import pandas as pd

INDEX_NAMES = frozenset({"", "index", "id", "rownames", "row", "row_id", "rowid"})
"""Lower-case column names taken for a row index (as are names starting ``unnamed:``)."""


@dataclass(frozen=True)
class ColumnChoice:
    """The feature columns a user chose, and the caps of categorical encoding.

    Attributes:
        include: Exactly these feature columns, in this order; None: every usable column.
        exclude: Columns never used as features.
        max_levels: Most one-hot levels kept per categorical column (besides
            ``(other)`` and ``(missing)``).
        min_level_count: A value seen fewer times in the training split goes to ``(other)``.
    """

    include: tuple[str, ...] | None = None
    exclude: tuple[str, ...] = ()
    max_levels: int = 50
    min_level_count: int = 3


def _listed(names: list[str]) -> str:
    return shown_names(names)


def encode_labels(values: pd.Series, where: str, label_column: str
                  ) -> tuple[np.ndarray, tuple[str, ...], np.ndarray]:
    """Class numbers of the labelled rows, the class names, and which rows have a label.

    Returns:
        ``(codes (n,), class_names, keep (N,) bool)`` with ``n = keep.sum()``.
    """
    import pandas as pd

    keep = ~values.isna().to_numpy()
    name = f"label column {label_column!r} in {where}"
    if not keep.any():
        raise DataError(f"{name} has no values (every row is missing); set label_column to a "
                        "column that holds the classes")
    present = values[keep]
    if pd.api.types.is_bool_dtype(present) or pd.api.types.is_numeric_dtype(present):
        numbers = present.to_numpy()
        if numbers.dtype.kind == "f" and not np.all(numbers == np.floor(numbers)):
            example = numbers[numbers != np.floor(numbers)][0]
            raise DataError(f"{name} holds non-integer numbers, e.g. {example!r}; classes must be "
                            "text, integers or booleans (raykd does classification, not regression)")
        numbers = numbers.astype(np.int64)
        distinct = np.unique(numbers)
        codes = np.searchsorted(distinct, numbers)
        names = tuple(str(v) for v in (distinct.astype(bool) if pd.api.types.is_bool_dtype(present) else distinct))
    else:
        text = present.astype(str).to_numpy()
        distinct_text = np.unique(text)
        codes, names = np.searchsorted(distinct_text, text), tuple(str(v) for v in distinct_text)
    if len(names) < 2:
        raise DataError(f"{name} has {len(names)} distinct value(s) {list(names)}; need at least 2 classes")
    if len(names) > MAX_NUM_CLASSES:
        raise DataError(f"{name} has {len(names)} distinct values; at most {MAX_NUM_CLASSES} classes "
                        "are accepted (is it an identifier?)")
    return codes.astype(np.int64), names, keep


Kind = Literal["numeric", "categorical"]


def column_kind(values: pd.Series) -> Kind | None:
    """``numeric``, ``categorical``, or None for a dtype raykd does not encode."""
    import pandas as pd

    api = pd.api.types
    if api.is_bool_dtype(values) or (api.is_numeric_dtype(values) and not api.is_complex_dtype(values)):
        return "numeric"
    if isinstance(values.dtype, pd.CategoricalDtype) or api.is_string_dtype(values) or values.dtype == object:
        return "categorical"
    return None


def index_reason(name: str, values: pd.Series) -> str | None:
    """Why a column looks like a row index, or None (see the module docstring)."""
    import pandas as pd

    low = name.strip().lower()
    if low in INDEX_NAMES or low.startswith("unnamed:"):
        return f"looks like a row index (named {name!r})"
    if not pd.api.types.is_integer_dtype(values) or values.isna().any() or len(values) < 2:
        return None
    numbers = values.to_numpy()
    for start in (0, 1):
        if np.array_equal(numbers, np.arange(start, start + len(numbers))):
            return f"looks like a row index (values are {start}..{start + len(numbers) - 1} in file order)"
    return None


def choose_columns(frame: pd.DataFrame, label_column: str, choice: ColumnChoice, where: str
                   ) -> tuple[list[tuple[str, Kind]], list[dict[str, str]]]:
    """The candidate feature columns with their kinds, and the columns dropped with reasons.

    The rules that need the training split (empty, constant, identifier-like) are applied
    later, when the preprocessing is fitted.

    Raises:
        DataError: For a name in ``include``/``exclude`` that is not a column, the label
            column among the features, or an included column of an unsupported dtype.
    """
    columns = [str(c) for c in frame.columns]
    if len(set(columns)) != len(columns):
        twice = sorted({c for c in columns if columns.count(c) > 1})
        raise DataError(f"{where} has duplicate column names {twice}; rename them")
    named = [*(choice.include or ()), *choice.exclude]
    unknown = [n for n in named if n not in columns]
    if unknown:
        raise DataError(f"data.features names column(s) {unknown} that {where} does not have; "
                        f"its columns are {_listed(columns)}")
    if label_column in named:
        raise DataError(f"data.features names the label column {label_column!r}; the label is "
                        "never a feature: remove it from features.include/exclude")
    dropped: list[dict[str, str]] = []
    chosen: list[tuple[str, Kind]] = []
    wanted = list(choice.include) if choice.include is not None else [c for c in columns if c != label_column]
    for name in columns:
        if name == label_column or name in wanted:
            continue
        reason = "in features.exclude" if name in choice.exclude else "not in features.include"
        dropped.append({"column": name, "reason": reason})
    for name in wanted:
        if name in choice.exclude:
            continue
        kind = column_kind(frame[name])
        if kind is None:
            reason = f"unsupported dtype {frame[name].dtype} (give numbers, text or booleans)"
            if choice.include is not None:
                raise DataError(f"features.include names column {name!r} of {where}, which has "
                                f"{reason}")
            dropped.append({"column": name, "reason": reason})
            continue
        reason = None if choice.include is not None else index_reason(name, frame[name])
        if reason is not None:
            dropped.append({"column": name, "reason": reason + "; name it in features.include to use it"})
            continue
        chosen.append((name, kind))
    if not chosen:
        raise DataError(f"{where} has no usable feature columns besides label column "
                        f"{label_column!r}; columns found: {_listed(columns)}; dropped: "
                        + "; ".join(f"{d['column']!r} ({d['reason']})" for d in dropped))
    return chosen, dropped
