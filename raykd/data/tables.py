"""Tables (``.csv``, ``.parquet``) as datasets: labels named, columns chosen and reported,
preprocessing fitted on the training split only.

The order: read the file; number the classes and drop rows without a label
(:func:`~raykd.data.table_columns.encode_labels`); choose the candidate feature columns
(:func:`~raykd.data.table_columns.choose_columns`); split the rows by seed exactly as
:func:`~raykd.data.splits.build_dataset` does; fit the preprocessing
(:mod:`raykd.data.table_prep`) on the training rows (after ``train_limit``); transform
every row with it. The resulting :class:`~raykd.data.dataset.Dataset` carries
``class_names`` and ``table`` (the fitted :class:`~raykd.data.table_prep.TablePrep`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from raykd.data.checks import DataError, describe_error, shown_names
from raykd.data.dataset import Dataset, Preprocessing, RawData
from raykd.data.paths import open_data
from raykd.data.splits import build_dataset, dataset_indices
from raykd.data.table_columns import ColumnChoice, Kind, choose_columns, encode_labels
from raykd.data.table_prep import MISSING, OTHER, ColumnPrep, TablePrep, level_text

if TYPE_CHECKING:
    import pandas as pd

TABLE_SUFFIXES = (".csv", ".parquet")
IDENTITY = Preprocessing(divisor=1.0, mean=0.0, std=1.0)
"""The tables' inputs are already scaled by :class:`TablePrep`: build_dataset leaves them."""


def read_table(path: Path, text_columns: Sequence[str] = ()) -> pd.DataFrame:
    """A ``.csv`` (header row) or ``.parquet`` file as a frame; DataError when unreadable.

    ``text_columns`` of a ``.csv`` are read as text whatever they hold (a model's categorical
    columns at predict time: ``1`` stays level ``'1'``, never the float ``1.0``); blanks
    stay missing. A ``.parquet`` file's columns keep their stored types.
    """
    import pandas as pd

    suffix = path.suffix.lower()
    if suffix not in TABLE_SUFFIXES:
        raise DataError(f"{str(path)!r} is not a table; expected a file ending in "
                        f"{', '.join(TABLE_SUFFIXES)}")
    if not path.is_file():
        raise DataError(f"data file {str(path)!r} does not exist")
    try:
        with open_data(path) as handle:
            if suffix == ".csv":
                return pd.read_csv(handle, dtype=dict.fromkeys(text_columns, str))
            return pd.read_parquet(handle)
    except (MemoryError, DataError):  # not the file's fault: a bug or a too-small machine
        raise
    except Exception as exc:  # any parse failure means the file is unreadable
        raise DataError(f"could not read {str(path)!r} as {suffix}: {describe_error(exc)}") from exc


def _fit_column(values: pd.Series, name: str, kind: Kind, choice: ColumnChoice
                ) -> tuple[ColumnPrep | None, str]:
    """Fit one column on the training rows; (None, reason) when it is dropped."""
    import pandas as pd

    absent = values.isna()
    present = values[~absent]
    if present.empty:
        return None, f"no values in the training split ({len(values)} rows, all missing)"
    has_missing = bool(absent.any())
    if kind == "numeric":
        numbers = present.to_numpy(dtype=np.float64)
        median = float(np.median(numbers))
        filled = np.where(absent.to_numpy(), median, values.to_numpy(dtype=np.float64, na_value=np.nan))
        std = float(filled.std())
        if std == 0.0 and not has_missing:
            return None, f"constant in the training split (every value {median:g})"
        return ColumnPrep(name=name, kind="numeric", median=median, mean=float(filled.mean()),
                          std=std if std > 1e-12 else 1.0, missing_indicator=has_missing), ""
    counts = present.map(level_text).value_counts()  # the levels transform will look up
    if len(counts) == 1 and not has_missing:
        return None, f"constant in the training split (every value {counts.index[0]!r})"
    if len(counts) > choice.max_levels and len(counts) > len(values) / 2:
        return None, (f"looks like an identifier or free text ({len(counts)} distinct values in "
                      f"{len(values)} training rows)")
    frequent = counts[counts >= choice.min_level_count].sort_index(kind="stable")
    kept = pd.Series(frequent).sort_values(ascending=False, kind="stable").index[: choice.max_levels]
    levels = (*sorted(str(v) for v in kept), OTHER, *((MISSING,) if has_missing else ()))
    return ColumnPrep(name=name, kind="categorical", levels=levels), ""


def fit_table(train: pd.DataFrame, candidates: list[tuple[str, Kind]], *, choice: ColumnChoice,
              dropped: list[dict[str, str]], label_column: str, class_names: tuple[str, ...],
              rows: dict[str, int], fitted_on: str, where: str) -> TablePrep:
    """Fit every candidate column on the training rows ``train`` (see the module docstrings).

    Raises:
        DataError: When a column named in ``include`` cannot be fitted, or none is left.
    """
    columns: list[ColumnPrep] = []
    dropped = list(dropped)
    for name, kind in candidates:
        column, reason = _fit_column(train[name], name, kind, choice)
        if column is not None:
            columns.append(column)
        elif choice.include is not None and reason.startswith("no values"):
            raise DataError(f"features.include names column {name!r} of {where}, which has {reason}; "
                            "remove it from features.include")
        elif choice.include is None:
            dropped.append({"column": name, "reason": reason})
        else:  # a named column is kept even when constant: the user asked for it
            columns.append(_kept_anyway(train[name], name, kind, choice))
    if not columns:
        raise DataError(f"{where}: no feature column is left after fitting on the training split; "
                        "dropped: " + "; ".join(f"{d['column']!r} ({d['reason']})" for d in dropped))
    return TablePrep(label_column=label_column, class_names=class_names, columns=tuple(columns),
                     dropped=tuple(dropped), rows=rows, fitted_on=fitted_on)


def _kept_anyway(values: pd.Series, name: str, kind: Kind, choice: ColumnChoice) -> ColumnPrep:
    """A named column that the automatic rules would drop (constant or identifier-like)."""
    if kind == "numeric":
        median = float(np.median(values.dropna().to_numpy(dtype=np.float64)))
        return ColumnPrep(name=name, kind="numeric", median=median, mean=median, std=1.0)
    counts = values.dropna().map(level_text).value_counts()
    kept = counts[counts >= choice.min_level_count].index[: choice.max_levels]
    return ColumnPrep(name=name, kind="categorical", levels=(*sorted(map(str, kept)), OTHER))


def load_table(path: Path, *, label_column: str, choice: ColumnChoice, val_fraction: float,
               test_fraction: float, seed: int, train_limit: int | None) -> Dataset:
    """Read, choose, split, fit on the training rows, transform: the table as a Dataset."""
    where = repr(str(path))
    frame = read_table(path)
    if label_column not in frame.columns:
        columns = [str(c) for c in frame.columns]
        raise DataError(f"label column {label_column!r} not found in {where}; columns found: "
                        f"{shown_names(columns)}; set data.label_column to one of them")
    frame.columns = [str(c) for c in frame.columns]
    candidates, dropped = choose_columns(frame, label_column, choice, where)
    codes, class_names, keep = encode_labels(frame[label_column], where, label_column)
    frame = frame.loc[keep].reset_index(drop=True)
    train_idx, _, _ = dataset_indices(len(frame), carve_test=True, val_fraction=val_fraction,
                                      test_fraction=test_fraction, seed=seed,
                                      train_limit=train_limit, where=where)
    rows = {"read": int(len(keep)), "dropped_missing_label": int((~keep).sum()), "used": len(frame)}
    prep = fit_table(frame.iloc[train_idx], candidates, choice=choice, dropped=dropped,
                     label_column=label_column, class_names=class_names, rows=rows,
                     fitted_on=f"the training split: {len(train_idx)} rows (data.seed {seed})",
                     where=where)
    x, _ = prep.transform(frame, where)
    raw = RawData(x=x, y=codes, x_test=None, y_test=None, where=where,
                  label_name=f"column {label_column!r}", preprocessing=IDENTITY)
    data = build_dataset(path.stem, raw, val_fraction=val_fraction, test_fraction=test_fraction,
                         seed=seed, train_limit=train_limit)
    return replace(data, num_classes=len(class_names), class_names=class_names, table=prep)
