"""Readers for user data files: ``.npz``, ``.parquet`` and ``.csv``.

Each reader takes the file's path and the label column name and returns a
:class:`~raykd.data.splits.RawData`; a file that cannot be parsed raises
:class:`~raykd.data.splits.DataError` naming the path and the reason.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from raykd.data.splits import DataError, RawData

if TYPE_CHECKING:
    import pandas as pd

MAX_NAMES_SHOWN = 20
ZIP_MAGIC = b"PK\x03\x04"
NPY_MAGIC = b"\x93NUMPY"


def _reason(exc: BaseException) -> str:
    """One-line, bounded description of an exception."""
    lines = str(exc).strip().splitlines()
    text = f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def _names(names: list[str]) -> str:
    """Quote up to :data:`MAX_NAMES_SHOWN` names for an error message."""
    shown = ", ".join(repr(name) for name in names[:MAX_NAMES_SHOWN])
    more = len(names) - MAX_NAMES_SHOWN
    return f"[{shown}{f', ... {more} more' if more > 0 else ''}]"


def read_npz(path: Path, label_column: str) -> RawData:
    """Read arrays ``x`` and ``y`` and, optionally, ``x_test`` and ``y_test``.

    Args:
        path: The ``.npz`` file.
        label_column: Unused; labels are always array ``y``.

    Returns:
        The raw arrays; ``x`` may be ``(N, D)``, ``(N, H, W)`` or ``(N, C, H, W)``.
    """
    del label_column
    where = repr(str(path))
    try:
        with path.open("rb") as handle:
            magic = handle.read(len(NPY_MAGIC))
    except OSError as exc:
        raise DataError(f"could not read {where} as .npz: {_reason(exc)}") from exc
    if not magic.startswith((ZIP_MAGIC, NPY_MAGIC)):
        raise DataError(
            f"could not read {where} as .npz: not a zip archive (write it with "
            "numpy.savez(path, x=..., y=...))"
        )
    try:
        archive = np.load(path, allow_pickle=False)
    except MemoryError:  # not the file's fault: a bug or a too-small machine
        raise
    except Exception as exc:  # any parse failure means the file is unreadable
        raise DataError(f"could not read {where} as .npz: {_reason(exc)}") from exc
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise DataError(
            f"could not read {where} as .npz: it holds a single array, not an archive "
            "with arrays 'x' and 'y' (save it with numpy.savez(path, x=..., y=...))"
        )
    with archive:
        keys = list(archive.files)
        if "x" not in keys or "y" not in keys:
            raise DataError(
                f"{where} must hold arrays 'x' and 'y' (optionally 'x_test', 'y_test'); "
                f"found keys {_names(keys)}"
            )
        try:
            wanted = [key for key in ("x", "y", "x_test", "y_test") if key in keys]
            arrays = {key: archive[key] for key in wanted}
        except MemoryError:  # not the file's fault: a bug or a too-small machine
            raise
        except Exception as exc:  # a corrupt or pickled member
            raise DataError(f"could not read {where} as .npz: {_reason(exc)}") from exc
    return RawData(
        x=arrays["x"], y=arrays["y"], x_test=arrays.get("x_test"),
        y_test=arrays.get("y_test"), where=where, label_name="array 'y'",
    )


def _frame_to_raw(frame: pd.DataFrame, path: Path, label_column: str) -> RawData:
    """Split a table into numeric feature columns and the label column."""
    where = repr(str(path))
    columns = [str(column) for column in frame.columns]
    if label_column not in frame.columns:
        raise DataError(
            f"label column {label_column!r} not found in {where}; columns found: "
            f"{_names(columns)}; set label_column to one of them"
        )
    features = frame.drop(columns=[label_column]).select_dtypes(include=["number", "bool"])
    if features.shape[1] == 0:
        raise DataError(
            f"{where} has no numeric feature columns besides label column "
            f"{label_column!r}; columns found: {_names(columns)}"
        )
    return RawData(
        x=features.to_numpy(dtype=np.float64, na_value=np.nan),
        y=frame[label_column].to_numpy(), x_test=None, y_test=None, where=where,
        label_name=f"column {label_column!r}",
    )


def read_csv(path: Path, label_column: str) -> RawData:
    """Read a CSV table with a header row.

    Feature columns are all numeric columns except ``label_column``.
    """
    import pandas as pd

    try:
        frame = pd.read_csv(path)
    except MemoryError:  # not the file's fault: a bug or a too-small machine
        raise
    except Exception as exc:  # any parse failure means the file is unreadable
        raise DataError(f"could not read {str(path)!r} as .csv: {_reason(exc)}") from exc
    return _frame_to_raw(frame, path, label_column)


def read_parquet(path: Path, label_column: str) -> RawData:
    """Read a Parquet table (through pyarrow).

    Feature columns are all numeric columns except ``label_column``.
    """
    import pandas as pd

    try:
        frame = pd.read_parquet(path)
    except MemoryError:  # not the file's fault: a bug or a too-small machine
        raise
    except Exception as exc:  # any parse failure means the file is unreadable
        message = f"could not read {str(path)!r} as .parquet: {_reason(exc)}"
        raise DataError(message) from exc
    return _frame_to_raw(frame, path, label_column)


READERS: dict[str, Callable[[Path, str], RawData]] = {
    ".csv": read_csv,
    ".npz": read_npz,
    ".parquet": read_parquet,
}
"""File readers by lower-case suffix."""
