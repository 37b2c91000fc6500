"""The console of ``raykd run``: raykd's own lines on the terminal, Ray's output in a log file.

Ray writes to the driver's stdout and stderr: its workers' and actors' lines (with
``(Name pid=...)`` prefixes), its warnings and the core worker's C++ log. While a job runs,
:class:`RayOutput` points the process's file descriptors 1 and 2 at the job's
``ray.log``, and raykd writes its own lines to copies of the terminal's descriptors
(:func:`out`, :func:`err`); when the job ends, the descriptors are put back. So the console
(and ``ray job logs`` of a submitted run, which the dashboard tails) holds raykd's lines, and
``ray.log`` everything Ray said.

On a terminal a rich progress bar follows the job's stages and epochs; elsewhere (CI, a
log, ``ray job submit``) the same lines come plain, without colour codes.
"""

from __future__ import annotations

import errno
import faulthandler
import os
import sys
import threading
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

from raykd.core.errors import JobDirError
from raykd.core.jobdir import JobLayout

#: Set before Ray is imported: no colour codes in Ray's prefixes, every line kept.
QUIET_RAY_ENV = {"RAY_COLOR_PREFIX": "0", "RAY_DEDUP_LOGS": "0"}

_console: dict[str, Any] = {}


def quiet_ray_env() -> None:
    """Ask Ray (before it is imported) for plain prefixes and no log deduplication."""
    for key, value in QUIET_RAY_ENV.items():
        os.environ.setdefault(key, value)


def out() -> TextIO:
    """Where raykd's console lines go: the terminal's stdout, also while Ray's is diverted."""
    return _console.get("out", sys.stdout)


def err() -> TextIO:
    """Where raykd's errors go: the terminal's stderr, also while Ray's is diverted."""
    return _console.get("err", sys.stderr)


def ray_log() -> Path | None:
    """The ``ray.log`` of the job whose output is diverted now, or else of the last one since
    :func:`forget_ray_log` (None when nothing was diverted)."""
    return _console.get("ray_log")


def forget_ray_log() -> None:
    """Start a command afresh: :func:`ray_log` names no earlier job's file."""
    if "out" not in _console:
        _console.pop("ray_log", None)


def _process_streams() -> bool:
    """True when sys.stdout and sys.stderr are this process's descriptors 1 and 2 (not a test's
    in-memory capture, which must keep what is written to it)."""
    try:
        return sys.stdout.fileno() == 1 and sys.stderr.fileno() == 2
    except (AttributeError, OSError, ValueError):
        return False


def _open_log(path: Path) -> int:
    """``path`` opened for appending: private to the job's owner, never through a planted link,
    not inherited by children. JobDirError naming the file when it cannot be."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        return os.open(path, flags, 0o600)
    except OSError as exc:
        why = "it is a symbolic link" if exc.errno == errno.ELOOP else exc.strerror
        raise JobDirError(f"cannot open Ray's log {path} ({why}); accepted: a regular file "
                          "the job's owner can write, or none") from None


def _thread_error(args: threading.ExceptHookArgs) -> None:
    """An exception that ended a thread, on the console's stderr (not in Ray's log)."""
    if args.exc_type is SystemExit:
        return
    stream = err()
    name = args.thread.name if args.thread is not None else "?"
    stream.write(f"Exception in thread {name}:\n")
    traceback.print_exception(args.exc_type, args.exc_value, args.exc_traceback, file=stream)
    stream.flush()


class RayOutput:
    """While inside: descriptors 1 and 2 append to ``path`` (Ray's output), and :func:`out` /
    :func:`err` are copies of what they were (the terminal). A thread's uncaught exception and
    a fatal error's traceback (faulthandler) go to :func:`err`. On exit everything is as before,
    so a second job of the same process gets its own log. Nothing changes (``diverted`` is
    False) when sys.stdout/stderr are not descriptors 1 and 2 (a test's capture)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.diverted = False
        self._restore: list[int] = []
        self._before: dict[str, Any] = {}
        self._hooks: tuple[Any, bool] = (None, False)

    def __enter__(self) -> RayOutput:
        if not _process_streams():
            return self
        log = _open_log(self.path)  # first: a refused file leaves nothing to undo
        streams: dict[str, TextIO] = {}
        try:
            for fd in (1, 2):
                self._restore.append(os.dup(fd))
            for name, stream in (("out", out()), ("err", err())):
                streams[name] = os.fdopen(os.dup(stream.fileno()), "w", buffering=1,
                                          encoding=stream.encoding, errors="replace")
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(log, 1)
            os.dup2(log, 2)
        except BaseException:
            self._put_back()
            for stream in streams.values():
                stream.close()
            raise
        finally:
            os.close(log)
        self._before = dict(_console)
        _console.update(streams, ray_log=self.path)
        self._hooks = (threading.excepthook, faulthandler.is_enabled())
        threading.excepthook = _thread_error
        faulthandler.enable(file=streams["err"])
        self.diverted = True
        return self

    def _put_back(self) -> None:
        """Descriptors 1 and 2 as they were at the start; the saved copies closed."""
        for fd, saved in enumerate(self._restore, start=1):
            os.dup2(saved, fd)
        for saved in self._restore:
            os.close(saved)
        self._restore = []

    def __exit__(self, *exc: Any) -> None:
        if not self.diverted:
            return
        self.diverted = False
        hook, fault_on = self._hooks
        threading.excepthook = hook
        ours = {name: _console[name] for name in ("out", "err")}
        _console.clear()
        _console.update(self._before)
        if "out" not in self._before:  # the outermost: its log stays the one to name
            _console["ray_log"] = self.path
        # faulthandler holds the descriptor number: point it away before that closes
        if fault_on:
            faulthandler.enable(file=err())
        else:
            faulthandler.disable()
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            self._put_back()
            for stream in ours.values():
                try:  # a terminal gone (a pipe closed by ``head``): what it did not take is lost
                    stream.close()
                except OSError:
                    pass


def divert_ray_output(path: Path) -> RayOutput:
    """A context manager: Ray's output (descriptors 1 and 2) appended to ``path`` while inside."""
    return RayOutput(path)


class Display:
    """raykd's lines of a running job: plain ``raykd: ...`` lines, or (on a terminal) the same
    lines above a rich progress bar of the current stage and the students' epochs."""

    def __init__(self, stream: TextIO | None = None, *, bar: bool | None = None) -> None:
        self.stream = stream if stream is not None else out()
        self.progress: Any = None
        if bar if bar is not None else self.stream.isatty():
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
            )

            terminal = Console(file=self.stream, force_terminal=True)
            self.progress = Progress(TextColumn("{task.description}"), BarColumn(),
                                     MofNCompleteColumn(), TimeElapsedColumn(), console=terminal,
                                     transient=True,  # sys.stdout and stderr stay Ray's (the log)
                                     redirect_stdout=False, redirect_stderr=False)
            self.task = self.progress.add_task("starting", total=None)

    def __enter__(self) -> Display:
        if self.progress is not None:
            self.progress.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.progress is not None:
            self.progress.stop()

    def line(self, text: str) -> None:
        """One raykd line (above the bar on a terminal)."""
        if self.progress is None:
            self.stream.write(f"raykd: {text}\n")
            self.stream.flush()
        else:
            self.progress.console.print(f"raykd: {text}", highlight=False, markup=False)

    def event(self, event: Any) -> None:
        """Move the bar: the stage that started, the students' epochs done of the job's total."""
        if self.progress is None:
            return
        if event.type == "job_started":
            self.progress.update(self.task, total=event.total_epochs or None, completed=0)
        elif event.type == "stage_started":
            self.progress.update(self.task, description=f"stage {event.stage}")
        elif event.type == "epoch":
            label = event.label or event.student
            self.progress.update(self.task, advance=1, description=f"student {label}")


@contextmanager
def divert_to_job(job: Any) -> Iterator[None]:
    """Ray's output diverted to the job's ``ray.log`` while inside (one console line says
    where). A Ray started meanwhile by this process is shut down before the terminal gets its
    descriptors back, so its last lines (workers stopping) stay in the job's log."""
    path = JobLayout(Path(job.job_dir)).ray_log
    ray_before = _ray_running()
    with RayOutput(path) as diverted:
        if diverted.diverted:
            try:  # best effort: a terminal gone already does not fail the job
                out().write(f"raykd: Ray's own output (workers, warnings): {path}\n")
                out().flush()
            except OSError:
                pass
        try:
            yield
        finally:
            if diverted.diverted and not ray_before and _ray_running():
                import ray

                ray.shutdown()


def _ray_running() -> bool:
    """Whether this process is connected to Ray (without importing it)."""
    ray = sys.modules.get("ray")
    return bool(ray is not None and ray.is_initialized())
