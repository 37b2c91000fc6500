"""Which files a job may read as data, checked on the file actually opened.

A spec's paths are checked once by the service when it is submitted
(:func:`raykd.service.policy.admit`); the driver opens them later, when a path may have
become a symlink to something else. So every data file the job reads (a table, an
``.npz``, a Parquet file, every image of an image folder, a given checkpoint) is opened
here first, and the *real path of the opened file* (``/proc/self/fd/N``; elsewhere the
resolved path, checked to be the same file as the one opened) is compared with:

- the **data roots**: ``RAYKD_DATA_ROOTS``, a JSON list of absolute paths (the format of
  the service's ``Settings.data_roots``), set by the service in its drivers' environment
  (:func:`data_roots_env`). Unset (``raykd run`` on one's own machine): any path;
  set to ``[]``: no file at all (built-in datasets only);
- the **never-readable** places, whatever the roots say: ``/proc`` and any ``.service``
  directory (a service's storage keeps its secrets in ``<storage>/.service``), and any
  directory given to :func:`forbid` (the job's ``<storage>/.service`` wherever it points).

Directories (image folders and their class folders) are checked the same way before they
are listed. A refusal is a :class:`~raykd.data.checks.DataError` naming the path the
spec gave, never the file's content or where the link points.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

from raykd.core.jobdir import StorageLayout
from raykd.data.checks import DataError

ROOTS_ENV = "RAYKD_DATA_ROOTS"
SERVICE_DIR = StorageLayout.SERVICE
NEVER_READ = (Path("/proc"),)
"""Never read as data, whatever the data roots (besides every ``.service`` directory)."""
OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NONBLOCK", 0)
"""Read-only; non-blocking while opening (a FIFO swapped in never hangs the driver)."""
_FORBIDDEN: set[Path] = set()


def data_roots_env(roots: Iterable[Path]) -> dict[str, str]:
    """``{RAYKD_DATA_ROOTS: '["/abs/root", ...]'}``: the roots (resolved) for a driver's
    environment; an empty list allows no file at all."""
    return {ROOTS_ENV: json.dumps([str(Path(r).expanduser().resolve()) for r in roots])}


def data_roots(environ: dict[str, str] | None = None) -> tuple[Path, ...] | None:
    """The data roots of ``environ`` (default: this process's), resolved; None when unset.

    Raises:
        DataError: When the variable is set but is not a JSON list of absolute paths (a
            driver then reads no file rather than any file).
    """
    raw = (os.environ if environ is None else environ).get(ROOTS_ENV)
    if raw is None:
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        value = None
    if not isinstance(value, list) or not all(isinstance(v, str) and os.path.isabs(v)
                                              for v in value):
        raise DataError(f"{ROOTS_ENV} must be a JSON list of absolute paths, e.g. "
                        '["/data/shared"]; it is not, so no data file may be read')
    return tuple(Path(os.path.realpath(v)) for v in value)


def forbid(directory: str | os.PathLike[str]) -> None:
    """Never read data from ``directory`` (resolved now) in this process, e.g. the job's
    ``<storage>/.service`` when it is a link to elsewhere."""
    _FORBIDDEN.add(Path(os.path.realpath(directory)))


def refusal(real: Path, roots: tuple[Path, ...] | None) -> str | None:
    """Why the real path ``real`` may not be read (see the module docstring), or None."""
    if SERVICE_DIR in real.parts or any(real.is_relative_to(p) for p in (*NEVER_READ, *_FORBIDDEN)):
        return ("it lies in a place raykd never reads data from (a service's .service "
                "directory, or /proc)")
    if roots is not None and not any(real.is_relative_to(r) for r in roots):
        shown = [str(r) for r in roots]
        return (f"once its links are followed it is outside the data roots this service allows "
                f"({shown or 'none: built-in datasets only'})")
    return None


def _opened_path(fd: int, path: str | os.PathLike[str]) -> Path:
    """The real path of the file open as ``fd``: ``/proc/self/fd``'s link, or else the
    resolved ``path`` when it is the very file open (same device and inode)."""
    try:
        return Path(os.readlink(f"/proc/self/fd/{fd}"))
    except OSError:
        real = os.path.realpath(path)
        mine, theirs = os.fstat(fd), os.stat(real)
        if (mine.st_dev, mine.st_ino) != (theirs.st_dev, theirs.st_ino):
            raise DataError(f"{os.fspath(path)!r} changed while it was opened; it may not be "
                            "read") from None
        return Path(real)


def _open_checked(path: str | os.PathLike[str], what: str, flags: int) -> int:
    """``os.open(path, flags)`` checked by :func:`refusal` (closed again when refused)."""
    try:
        fd = os.open(path, flags | OPEN_FLAGS)
    except FileNotFoundError:
        raise DataError(f"{what} {os.fspath(path)!r} does not exist") from None
    except OSError as err:
        raise DataError(f"{what} {os.fspath(path)!r} could not be opened ({err.strerror})") from None
    try:
        why = refusal(_opened_path(fd, path), data_roots())
        if why is not None:
            raise DataError(f"{what} {os.fspath(path)!r} may not be read: {why}")
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_data(path: str | os.PathLike[str], what: str = "data file") -> BinaryIO:
    """``path`` opened for reading (binary), after checking the file it opened.

    Raises:
        DataError: When the opened file is not a regular file, or may not be read (see
            the module docstring); the message names ``path`` as given.
    """
    fd = _open_checked(path, what, 0)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise DataError(f"{what} {os.fspath(path)!r} is not a regular file")
    return os.fdopen(fd, "rb")


def read_data(path: str | os.PathLike[str], what: str = "data file") -> bytes:
    """The whole content of ``path``, opened by :func:`open_data`."""
    with open_data(path, what) as handle:
        return handle.read()


def check_file(path: str | os.PathLike[str], what: str = "data file") -> Path:
    """The real path of ``path`` once opened and checked (for readers that take a path)."""
    with open_data(path, what) as handle:
        return _opened_path(handle.fileno(), path)


def list_dir(path: Path, what: str = "image folder") -> list[Path]:
    """The entries of directory ``path`` (as ``path / name``, sorted), listed through a checked
    descriptor of the directory itself."""
    fd = _open_checked(path, what, getattr(os, "O_DIRECTORY", 0))
    try:
        names = os.listdir(fd)
    finally:
        os.close(fd)
    return [path / name for name in sorted(names)]


def checked_checkpoint(path: str | None) -> str | None:
    """A checkpoint the spec names, as the real path of the file checked by :func:`check_file`
    (load it from there); None stays None."""
    return None if path is None else str(check_file(path, "checkpoint"))
