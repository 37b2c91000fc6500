"""Readers for user array files (``.npz``); tables are read by :mod:`raykd.data.tables`.

Each reader takes the file's path and the label column name and returns a
:class:`~raykd.data.dataset.RawData`; a file that cannot be parsed raises
:class:`~raykd.data.checks.DataError` naming the path and the reason.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import numpy as np

from raykd.data.checks import DataError, describe_error, shown_names
from raykd.data.dataset import RawData
from raykd.data.paths import open_data

ZIP_MAGIC = b"PK\x03\x04"
NPY_MAGIC = b"\x93NUMPY"


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
    with open_data(path) as handle:
        return _read_npz(handle, where)


def _read_npz(handle: BinaryIO, where: str) -> RawData:
    """:func:`read_npz` of the opened (checked) file."""
    try:
        magic = handle.read(len(NPY_MAGIC))
        handle.seek(0)
    except OSError as exc:
        raise DataError(f"could not read {where} as .npz: {describe_error(exc)}") from exc
    if not magic.startswith((ZIP_MAGIC, NPY_MAGIC)):
        raise DataError(
            f"could not read {where} as .npz: not a zip archive (write it with "
            "numpy.savez(path, x=..., y=...))"
        )
    try:
        archive = np.load(handle, allow_pickle=False)
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
                f"found keys {shown_names(keys)}"
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


def read_npz_rows(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """Array ``x`` of an ``.npz`` and its array ``y`` when there is one (``raykd predict`` on
    raw rows: ``y`` holds class numbers); DataError naming the file when it has no ``x``."""
    where = repr(str(path))
    with open_data(path) as handle:
        try:
            with np.load(handle, allow_pickle=False) as archive:
                keys = list(archive.files)
                if "x" not in keys:
                    raise DataError(f"{where} must hold array 'x' (raw rows; 'y' optional, the "
                                    f"class numbers); found keys {shown_names(keys)}")
                return archive["x"], (archive["y"] if "y" in keys else None)
        except (DataError, MemoryError):
            raise
        except Exception as exc:  # any parse failure means the file is unreadable
            raise DataError(f"could not read {where} as .npz: {describe_error(exc)}") from None
