"""One driver at a time per job: the ``flock`` a job's driver holds on its directory's
``driver.lock`` for its whole life. Torch-free."""

from __future__ import annotations

import fcntl
import json
import os
import socket
from datetime import UTC, datetime
from pathlib import Path

from raykd.core.errors import JobDirError
from raykd.core.jobdir import JobLayout

__all__ = ["DriverLock"]


class DriverLock:
    """The exclusive lock a job's driver holds on ``<job_dir>/driver.lock`` while it runs.

    The file holds the holder's pid, host and start time (UTC, ISO 8601), for the error a
    second driver gets. :meth:`release` (or the end of the process) lets it go.
    """

    def __init__(self, job_dir: Path, job_id: str) -> None:
        self.fd: int | None = None
        path = job_dir / JobLayout.LOCK
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        except OSError as err:
            raise JobDirError(f"cannot open {str(path)!r} ({err.strerror or err}); the job "
                              "directory must be writable") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise JobDirError(f"job {job_id!r} in {job_dir} is already running: its driver "
                              f"{holder} holds {JobLayout.LOCK}; wait for it to end (or stop it) "
                              "before running this job id again") from None
        except OSError as err:
            os.close(fd)
            raise JobDirError(f"cannot lock {str(path)!r} ({err.strerror or err}); the job "
                              "directory must be on storage that supports flock") from None
        self.fd = fd
        me = {"pid": os.getpid(), "host": socket.gethostname(),
              "since": datetime.now(UTC).isoformat(timespec="seconds")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(me).encode(), 0)

    def release(self) -> None:
        """Let the lock go (idempotent); the file stays, empty of meaning."""
        fd, self.fd = self.fd, None
        if fd is not None:
            os.close(fd)  # closing the only descriptor releases the flock

    def __del__(self) -> None:
        self.release()


def _holder(fd: int) -> str:
    """``pid N on host H since T`` from a lock file's content (as far as it can be read)."""
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
        return f"pid {int(info['pid'])} on host {info['host']} since {info['since']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "(another process, just starting)"
