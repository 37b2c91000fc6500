"""Readers for user array files (``.npz``); tables are read by :mod:`raykd.data.tables`.

Each reader takes the file's path and the label column name and returns a
:class:`~raykd.data.splits.RawData`; a file that cannot be parsed raises
:class:`~raykd.data.splits.DataError` naming the path and the reason.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from raykd.data.splits import DataError, RawData

MAX_NAMES_SHOWN = 20
ZIP_MAGIC = b"PK\x03\x04"
NPY_MAGIC = b"\x93NUMPY"


def describe_error(exc: BaseException) -> str:
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
        raise DataError(f"could not read {where} as .npz: {describe_error(exc)}") from exc
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
        raise DataError(f"could not read {where} as .npz: {describe_error(exc)}") from exc
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
            raise DataError(f"could not read {where} as .npz: {describe_error(exc)}") from exc
    return RawData(
        x=arrays["x"], y=arrays["y"], x_test=arrays.get("x_test"),
        y_test=arrays.get("y_test"), where=where, label_name="array 'y'",
    )


READERS: dict[str, Callable[[Path, str], RawData]] = {".npz": read_npz}
"""Array-file readers by lower-case suffix; tables (.csv, .parquet) are read by
:mod:`raykd.data.tables`."""
