"""Writing files so that readers never see a partial one: a unique temporary name beside the
target, renamed into place; and ``mkdir -p`` that names the spec field when it fails.
Torch-free."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from raykd.core.errors import JobDirError

__all__ = ["atomic_path", "ensure_dir", "publish_file"]


def ensure_dir(path: Path, what: str) -> Path:
    """``mkdir -p`` that names ``what`` (a spec field) when it fails."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise JobDirError(
            f"{what}={str(path)!r} cannot be created ({err.strerror or err}); give a writable "
            "directory"
        ) from None
    return path


@contextmanager
def atomic_path(dst: str | Path) -> Iterator[Path]:
    """A unique temporary path beside ``dst``; renamed over ``dst`` when the block succeeds.

    Concurrent writers of one ``dst`` never share a temporary file; a reader sees either
    the old file or a whole new one; a failed write leaves no temporary file behind. The
    file gets the usual permissions (``0o666`` less the umask), not ``mkstemp``'s 0600,
    so other users of a shared cache can read it.
    """
    dst = Path(dst)
    fd, tmp = tempfile.mkstemp(dir=dst.parent, prefix=f".{dst.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, dst)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def publish_file(src: str | Path, dst: str | Path) -> Path:
    """Copy ``src`` to ``dst`` atomically (:func:`atomic_path`); returns ``dst``."""
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)
    return dst
