"""A job's downloadable files: listed without following a link, opened one path component
at a time without following one, and sent from the descriptor that was opened."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from fastapi.responses import FileResponse
from starlette.types import Receive, Scope, Send

from raykd.service.settings import Settings

ARTIFACT_SUFFIXES = (".json", ".jsonl", ".csv", ".png", ".safetensors", ".md", ".log")
HIDDEN_DIRS = ("ray_train", "tune", "tune_train", "logits")


def job_root(settings: Settings, job_id: str) -> Path:
    """``<storage>/<id>``: the storage root resolved, the job's own directory never (a job
    directory replaced by a link is not followed: it is not listed, and nothing opens it)."""
    return settings.storage.resolve() / settings.layout.job(job_id).root.name


def listed(settings: Settings, job_id: str) -> list[tuple[str, Path]]:
    """The downloadable files of a job: regular files with an artifact suffix, outside the
    hidden directories, reached without a link (a link, or a file under a linked directory,
    is not listed: its target's name and size stay unknown)."""
    root = job_root(settings, job_id)
    if root.is_symlink() or not root.is_dir():
        return []
    found = []
    for dirpath, dirnames, filenames in os.walk(root):  # never descends into a linked directory
        here = Path(dirpath)
        rel_dir = here.relative_to(root)
        if rel_dir.parts and rel_dir.parts[0] in HIDDEN_DIRS:
            dirnames[:] = []
            continue
        for name in filenames:
            path = here / name
            if path.suffix in ARTIFACT_SUFFIXES and stat.S_ISREG(path.lstat().st_mode):
                found.append(((rel_dir / name).as_posix(), path))
    return sorted(found)


def open_artifact(root: Path, rel: str) -> int:
    """A descriptor of the regular file ``root/rel``, opened one component at a time without
    following a link (a directory swapped for a link after the listing is refused too).

    Raises:
        OSError: a component is a link (or missing), or the file is not a regular file.
    """
    parts = rel.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise OSError(errno.EINVAL, "not a plain relative path")
    nofollow = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(root, nofollow | os.O_DIRECTORY)
    try:
        for part in parts[:-1]:
            inner = os.open(part, nofollow | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = inner
        # non-blocking: a FIFO planted under an artifact's name must not hang the request
        found = os.open(parts[-1], nofollow | os.O_NONBLOCK, dir_fd=fd)
    finally:
        os.close(fd)
    if not stat.S_ISREG(os.fstat(found).st_mode):
        os.close(found)
        raise OSError(errno.EINVAL, "not a regular file")
    return found


class OpenedFileResponse(FileResponse):
    """A file this process holds open, sent from that descriptor (``/proc/self/fd/N`` is the
    opened file whatever its path becomes) and closed when the response ends, however."""

    def __init__(self, fd: int, filename: str) -> None:
        self._fd: int | None = fd
        super().__init__(f"/proc/self/fd/{fd}", filename=filename, stat_result=os.fstat(fd))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.close()

    def close(self) -> None:
        """Close the descriptor (once: its number may be another file's afterwards)."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    def __del__(self) -> None:
        self.close()
