"""The console of ``raykd run``: raykd's own lines on the terminal, Ray's output in a log file.

Ray writes to the driver's stdout and stderr: its workers' and actors' lines (with
``(Name pid=...)`` prefixes), its warnings and the core worker's C++ log. While a job runs,
:func:`divert_ray_output` points the process's file descriptors 1 and 2 at the job's
``ray.log``, and raykd writes its own lines to copies of the terminal's descriptors
(:func:`out`, :func:`err`). So the console (and ``ray job logs`` of a submitted run, which
the dashboard tails) holds raykd's lines, and ``ray.log`` everything Ray said.

On a terminal a rich progress bar follows the job's stages and epochs; elsewhere (CI, a
log, ``ray job submit``) the same lines come plain, without colour codes.
"""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path
from typing import Any, TextIO

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
    """The file that holds Ray's output of this process (None when it was not diverted)."""
    return _console.get("ray_log")


def _process_streams() -> bool:
    """True when sys.stdout and sys.stderr are this process's descriptors 1 and 2 (not a test's
    in-memory capture, which must keep what is written to it)."""
    try:
        return sys.stdout.fileno() == 1 and sys.stderr.fileno() == 2
    except (AttributeError, OSError, ValueError):
        return False


def divert_ray_output(path: Path) -> bool:
    """Append everything written to descriptors 1 and 2 from now on to ``path``; :func:`out`
    and :func:`err` keep the terminal. Once per process (Ray's log thread writes until it
    exits); False when nothing changed (already diverted, or in-memory streams)."""
    if "ray_log" in _console or not _process_streams():
        return False
    # private to the job's owner, never through a planted link; opened before anything moves
    log = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC,
                  0o600)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = {name: os.fdopen(os.dup(fd), "w", buffering=1, encoding=stream.encoding,
                             errors="replace")
             for name, fd, stream in (("out", 1, sys.stdout), ("err", 2, sys.stderr))}
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
    _console.update(saved, ray_log=Path(path))
    return True


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


class EventFollower:
    """Shows a job's events as they are appended (a thread following ``events.jsonl``)."""

    def __init__(self, path: Any, *, after: int, display: Display) -> None:
        self.path, self.after, self.display = path, after, display
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> EventFollower:
        self.display.__enter__()
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.display.__exit__(*exc)

    def _run(self) -> None:
        from raykd.core.events import follow
        from raykd.report import event_line

        for event in follow(self.path, after=self.after, stop=self._stop.is_set, poll_s=0.1):
            self.display.event(event)
            line = event_line(event)
            if line:
                self.display.line(line)


def divert_to_job(job: Any) -> None:
    """Divert Ray's output to the job's ``ray.log``; one console line says where."""
    path = JobLayout(Path(job.job_dir)).ray_log
    if divert_ray_output(path):
        out().write(f"raykd: Ray's own output (workers, warnings): {path}\n")
        out().flush()


def job_console(job: Any) -> EventFollower:
    """The console of a job being run: Ray's output diverted to the job's ``ray.log`` (one line
    says where), then the job's events shown from the first new one."""
    divert_to_job(job)
    seen = job.earlier[-1].seq if job.earlier else 0
    return EventFollower(job.sink.path, after=seen, display=Display())
