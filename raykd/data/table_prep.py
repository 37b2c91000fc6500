"""The preprocessing of a table, fitted on the training split and stored with the student.

:class:`TablePrep` turns a table (a pandas ``DataFrame``) into the float32 matrix a model
reads, by the same rules at training time and at ``raykd predict`` time:

- **numeric** column (ints, floats, booleans): a missing value becomes the training
  split's median; when the column had missing values *in the training split*, an extra
  0/1 column ``<name>=missing`` says which rows were filled; then ``(x - mean) / std``
  with the training split's mean and standard deviation (std 0 counts as 1).
- **categorical** column (text, ``category``): one-hot over its levels. The levels are
  the values seen at least ``min_level_count`` times in the training split (the most
  frequent ``max_levels`` of them, sorted by name), then ``(other)`` for every rarer or
  unseen value, then ``(missing)`` when the training split had missing values. A missing
  value in a column without a ``(missing)`` level goes to ``(other)``. At predict time a
  ``.csv`` file's categorical columns are read as text, and a whole-number float (a
  ``.parquet`` column stored as numbers) is the level of its integer (``1.0`` -> ``'1'``).

Nothing is fitted on validation or test rows. :meth:`TablePrep.to_dict` is the JSON
record (``preprocessing.json`` in the job directory, and the ``preprocessing`` entry of
the student checkpoint's metadata); :meth:`TablePrep.from_dict` reads it back. Imports
numpy at import time; pandas only inside the functions that take a frame.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from raykd.data.checks import DataError

if TYPE_CHECKING:
    import pandas as pd

FORMAT = "raykd-table-preprocessing"
VERSION = 1
OTHER = "(other)"
"""The level of rare and unseen categories."""
MISSING = "(missing)"
"""The level of missing categories (present when the training split had any)."""
MISSING_RULE = (
    "numeric: missing -> training median, plus a 0/1 '<column>=missing' column when the "
    "training split had missing values; categorical: missing -> level '(missing)' when the "
    "training split had missing values, else '(other)'; rows with a missing label are dropped"
)


@dataclass(frozen=True)
class ColumnPrep:
    """How one input column becomes model inputs (see the module docstring).

    Attributes:
        name: The column's name in the file.
        kind: ``numeric`` or ``categorical``.
        median: Fill value of a numeric column (training median).
        mean: Training mean after filling (numeric).
        std: Training standard deviation after filling; 1 when it is 0 (numeric).
        missing_indicator: Whether a ``<name>=missing`` column follows (numeric).
        levels: One-hot levels in output order (categorical).
    """

    name: str
    kind: Literal["numeric", "categorical"]
    median: float = 0.0
    mean: float = 0.0
    std: float = 1.0
    missing_indicator: bool = False
    levels: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """This column's JSON entry: its kind's fields and the inputs it makes."""
        if self.kind == "categorical":
            return {"name": self.name, "kind": self.kind, "levels": list(self.levels),
                    "outputs": self.outputs}
        return {"name": self.name, "kind": self.kind, "median": self.median, "mean": self.mean,
                "std": self.std, "missing_indicator": self.missing_indicator, "outputs": self.outputs}

    @property
    def outputs(self) -> list[str]:
        """Names of the model inputs this column makes, in order."""
        if self.kind == "categorical":
            return [f"{self.name}={level}" for level in self.levels]
        return [self.name] + ([f"{self.name}=missing"] if self.missing_indicator else [])


@dataclass
class Fallbacks:
    """What :meth:`TablePrep.transform` had to map to a fallback level, per column."""

    unseen: dict[str, list[str]] = field(default_factory=dict)
    missing: dict[str, int] = field(default_factory=dict)

    def lines(self) -> list[str]:
        """One warning line per column whose values went to the ``(other)`` fallback."""
        out = []
        for name, values in self.unseen.items():
            shown = ", ".join(repr(v) for v in values[:5]) + (" ..." if len(values) > 5 else "")
            out.append(f"column {name!r}: {len(values)} value(s) not among the levels kept in "
                       f"training ({shown}) mapped to level {OTHER!r}")
        return out

    def notes(self) -> list[str]:
        """One line per column whose missing values were filled by the missing-value rule."""
        return [f"column {name!r}: {count} missing value(s) filled by the training rule"
                for name, count in self.missing.items()]


@dataclass(frozen=True)
class TablePrep:
    """A fitted table preprocessing: the columns used, their rules, and the label's classes.

    Attributes:
        label_column: The label column's name.
        class_names: Class ``i``'s name at index ``i``.
        columns: The input columns used, in output order.
        dropped: ``{"column", "reason"}`` of every column not used.
        rows: Row counts: ``read`` and ``dropped_missing_label``.
        fitted_on: Which rows the statistics came from.
    """

    label_column: str
    class_names: tuple[str, ...]
    columns: tuple[ColumnPrep, ...]
    dropped: tuple[dict[str, str], ...] = ()
    rows: dict[str, int] = field(default_factory=dict)
    fitted_on: str = ""

    @property
    def categorical_columns(self) -> list[str]:
        """The names of the categorical input columns (read as text at predict time)."""
        return [c.name for c in self.columns if c.kind == "categorical"]

    @property
    def feature_names(self) -> list[str]:
        """Every model input's name, in order."""
        return [name for column in self.columns for name in column.outputs]

    def to_dict(self) -> dict[str, Any]:
        """The JSON record (see the module docstring)."""
        body = asdict(self)
        body["columns"] = [c.to_dict() for c in self.columns]
        return {"format": FORMAT, "version": VERSION, **body, "class_names": list(self.class_names),
                "dropped": list(self.dropped), "missing_rule": MISSING_RULE,
                "feature_names": self.feature_names, "num_features": len(self.feature_names)}

    @classmethod
    def from_dict(cls, record: Any, where: str) -> TablePrep:
        """Read a record written by :meth:`to_dict`; DataError naming ``where`` when it is not one."""
        if not isinstance(record, dict) or record.get("format") != FORMAT:
            raise DataError(f"{where} is not a raykd table preprocessing record (no "
                            f"'format': {FORMAT!r}); it comes from a job on a .csv/.parquet file")
        if record.get("version") != VERSION:
            raise DataError(f"{where} has preprocessing version {record.get('version')!r}; this "
                            f"raykd reads version {VERSION}")
        try:
            keys = set(ColumnPrep.__dataclass_fields__)
            columns = tuple(ColumnPrep(**{k: v for k, v in c.items() if k in keys} |
                                       {"levels": tuple(c.get("levels", ()))})
                            for c in record["columns"])
            return cls(label_column=str(record["label_column"]),
                       class_names=tuple(str(n) for n in record["class_names"]), columns=columns,
                       dropped=tuple(record.get("dropped", ())), rows=dict(record.get("rows", {})),
                       fitted_on=str(record.get("fitted_on", "")))
        except (KeyError, TypeError, AttributeError) as err:
            raise DataError(f"{where}: preprocessing record is incomplete ({err!r})") from None

    def transform(self, frame: pd.DataFrame, where: str) -> tuple[np.ndarray, Fallbacks]:
        """The model inputs ``(N, D)`` float32 of ``frame``, and the fallbacks it used.

        Raises:
            DataError: When ``frame`` lacks columns the preprocessing uses (all named).
        """
        missing = [c.name for c in self.columns if c.name not in frame.columns]
        if missing:
            raise DataError(
                f"{where} lacks column(s) {missing} that the model was trained on; it needs every "
                f"column of {[c.name for c in self.columns]} (extra columns are ignored)"
            )
        fallbacks = Fallbacks()
        parts = [_column_inputs(frame[c.name], c, fallbacks) for c in self.columns]
        return np.ascontiguousarray(np.column_stack(parts), dtype=np.float32), fallbacks


def level_text(value: object) -> str:
    """A categorical value as the level it names: its text, a whole-number float as the
    integer it is (``1.0`` from a file that pandas read as numbers is level ``'1'``)."""
    if isinstance(value, float | np.floating) and np.isfinite(value) and float(value).is_integer():
        return str(int(value))
    return str(value)


def _column_inputs(values: pd.Series, column: ColumnPrep, fallbacks: Fallbacks) -> np.ndarray:
    """The ``(N, k)`` inputs of one column (see the module docstring)."""
    import pandas as pd

    absent = values.isna().to_numpy()
    if absent.any():
        fallbacks.missing[column.name] = int(absent.sum())
    if column.kind == "numeric":
        numbers = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        bad = ~np.isfinite(numbers) & ~absent
        if bad.any():
            example = values[bad].iloc[0]
            raise DataError(f"column {column.name!r} holds {int(bad.sum())} non-numeric or "
                            f"infinite value(s), e.g. {example!r}; it was numeric (finite) in "
                            "training")
        filled = np.where(np.isnan(numbers), column.median, numbers)
        out = [(filled - column.mean) / column.std]
        if column.missing_indicator:
            out.append(absent.astype(np.float64))
        return np.column_stack(out)
    text = values.astype("object").where(~absent, None)
    index = {level: i for i, level in enumerate(column.levels)}
    other = index[OTHER]
    codes = np.empty(len(values), dtype=np.int64)
    unseen: list[str] = []
    for row, value in enumerate(text.tolist()):
        if value is None:
            codes[row] = index.get(MISSING, other)
            continue
        key = level_text(value)
        code = index.get(key)
        if code is None or key in (OTHER, MISSING):
            code = other
            if key not in column.levels and key not in unseen:
                unseen.append(key)
        codes[row] = code
    if unseen:
        fallbacks.unseen[column.name] = unseen
    return np.eye(len(column.levels), dtype=np.float64)[codes]
