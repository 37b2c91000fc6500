"""The lifecycle every job shares, a run's or a sweep's, from its opened directory to its end.

:func:`raykd.engine.context.open_job` claims the directory and writes ``job_started``; then
:meth:`Lifecycle.run` does the rest the same way for ``run_job`` and ``run_sweep``:

1. the job's console (or Ray's output diverted to ``ray.log``) is entered around the stages,
   and what it gives, when a :class:`LifecycleCallback`, gets the job's events like any other;
2. the stages run (each timed and marked by :meth:`Job.stage`); the last one writes the
   result atomically with :meth:`Lifecycle.write_result` (``result.json`` or ``sweep.json``);
3. the end is told to the callbacks while the console is still open (so it shows the end
   too): ``job_finished`` with the result's path and the seconds since the start, or (a
   console that could not start, a stage or the result that raised) ``job_failed`` with the one-line message of a user error, the traceback of a bug,
   or ``cancelled`` for an interrupt or SIGTERM, and the exception re-raised: a job never
   stays "running" in its events after its driver has stopped by itself;
4. the job directory's driver lock is released.

What watches a job is a :class:`LifecycleCallback`, as Ray Train V2's controller calls its
callbacks: the event stream is one (:class:`EventStream`, always first). A callback that
overrides :meth:`LifecycleCallback.on_event` gets every event of the job while it runs,
whichever process wrote it (this driver, a student worker, a Ray Train worker, a trial): a
thread follows the job's ``events.jsonl`` (:class:`EventTail`), and the end event reaches
``on_event`` before ``on_finished`` or ``on_failed`` is called. Progress is what those
events count (:mod:`raykd.core.status`).
"""

from __future__ import annotations

import json
import threading
import time
import traceback
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager, ExitStack
from pathlib import Path
from typing import Any, Protocol

from raykd.core.errors import user_message
from raykd.core.events import JobFailed, JobFinished, follow
from raykd.engine.context import Job

__all__ = ["EventStream", "EventTail", "Lifecycle", "LifecycleCallback", "failure_event"]

Show = Callable[[Job], AbstractContextManager[Any]]


class ResultFile(Protocol):
    """A result model that writes itself atomically (``JobResult``, ``SweepResult``)."""

    def write(self, path: str | Path) -> Path: ...


def failure_event(exc: BaseException) -> JobFailed:
    """How a job ended without a result: cancelled, the user's error, or a bug."""
    if isinstance(exc, KeyboardInterrupt | SystemExit):
        return JobFailed(kind="cancelled", message="stopped by a signal or Ctrl+C; run the same "
                                                    "job id again to resume")
    message = user_message(exc)
    if message is not None:
        return JobFailed(kind="user_error", message=message)
    return JobFailed(kind="bug", message=f"{type(exc).__name__}: {exc}"[:2000],
                     traceback="".join(traceback.format_exception(exc))[-20000:])


class LifecycleCallback:
    """Watches a job's events and how it ends; every hook does nothing unless overridden."""

    def on_event(self, job: Job, event: Any) -> None:
        """An event of the job, as appended to its stream, in the stream's order, from this
        attempt's ``job_started`` to its end event; called from one thread of the driver, and
        only for a job with an event stream. An exception here stops this callback's calls and
        is raised by :meth:`Lifecycle.run` at the end (noted on the job's own error when it
        failed)."""

    def on_finished(self, job: Job, event: JobFinished) -> None:
        """The job wrote its result."""

    def on_failed(self, job: Job, event: JobFailed, exc: BaseException) -> None:
        """The job stopped without a result; ``exc`` is re-raised after the callbacks."""


class EventStream(LifecycleCallback):
    """Appends the end of the job to its ``events.jsonl``."""

    def on_finished(self, job: Job, event: JobFinished) -> None:
        job.emit(event)

    def on_failed(self, job: Job, event: JobFailed, exc: BaseException) -> None:
        job.emit(event)


class EventTail:
    """Follows a job's ``events.jsonl`` in a thread and hands each event to ``callbacks``.

    Delivery starts at this attempt's ``job_started`` and ends with the end event. A callback
    that raises gets no more events (the others do); the first such error is kept in
    :attr:`error`. :meth:`close` waits for the end event (written by then) to be handed over;
    when a callback is still busy after ``timeout_s``, the tail stops handing over events to
    any callback (the one busy call may still be running while the end hooks are called), and
    that is an error too.
    """

    def __init__(self, job: Job, callbacks: list[LifecycleCallback], *,
                 poll_s: float = 0.1) -> None:
        self.job, self.callbacks = job, list(callbacks)
        self.error: BaseException | None = None
        self._stop, self._abandoned = threading.Event(), threading.Event()
        after = max(job.started_seq - 1, 0)  # from this attempt's job_started on
        self._thread = threading.Thread(target=self._run, args=(job.layout.events, after, poll_s),
                                        name="raykd-event-tail", daemon=True)
        self._thread.start()

    def _run(self, path: Path, after: int, poll_s: float) -> None:
        try:
            for event in follow(path, after=after, stop=self._stop.is_set, poll_s=poll_s):
                for callback in list(self.callbacks):
                    if self._abandoned.is_set():
                        return
                    try:
                        callback.on_event(self.job, event)
                    except BaseException as exc:  # handed to Lifecycle.run, which raises it
                        self.callbacks.remove(callback)
                        self.error = exc if self.error is None else self.error
        except BaseException as exc:  # the events file itself could not be read
            self.error = exc if self.error is None else self.error

    def close(self, timeout_s: float = 60.0) -> None:
        """Hand over what is left (up to the end event), then stop; once (a tail closed or
        abandoned already returns at once)."""
        if self._stop.is_set() and (self._abandoned.is_set() or not self._thread.is_alive()):
            return
        self._stop.set()
        self._thread.join(timeout=timeout_s)
        if self._thread.is_alive():
            self._abandoned.set()
            self.error = self.error if self.error is not None else TimeoutError(
                f"a lifecycle callback's on_event was still busy {timeout_s:g} s after the job "
                "ended; it gets no more events")


class Lifecycle:
    """One opened job's run: console, stages, result, end event, lock (module docstring).

    Args:
        job: The opened job (its ``job_started`` written).
        show: Makes a context manager entered around the stages (the CLI's console); when
            what it gives is a :class:`LifecycleCallback`, it is called last, events included
            (the console shows the end event while it is still open).
        start: ``time.perf_counter()`` at the start; now when not given.
        callbacks: Called after :class:`EventStream`: each event while the job runs (those
            that override ``on_event``), then the job's end.
    """

    def __init__(self, job: Job, *, show: Show | None = None, start: float | None = None,
                 callbacks: Iterable[LifecycleCallback] = ()) -> None:
        self.job = job
        self.show = show
        self.start = time.perf_counter() if start is None else start
        self.callbacks = [EventStream(), *callbacks]
        self.listeners = [c for c in self.callbacks
                          if type(c).on_event is not LifecycleCallback.on_event]
        self.result_path: Path | None = None

    def seconds(self) -> float:
        """Seconds since the start."""
        return time.perf_counter() - self.start

    def timings(self) -> dict[str, float]:
        """Each stage's seconds and the total so far, for the result."""
        return {**self.job.timer.stages, "total": self.seconds()}

    def write_result(self, result: ResultFile) -> dict[str, Any]:
        """Write ``result`` atomically into the job directory; its content as read back."""
        return self.reuse_result(result.write(self.job.job_dir))

    def reuse_result(self, path: Path) -> dict[str, Any]:
        """The content of a result already on disk (written now or by an earlier attempt)."""
        self.result_path = path
        return dict(json.loads(path.read_text()))

    def run(self, stages: Callable[[Lifecycle], dict[str, Any]]) -> dict[str, Any]:
        """Run ``stages`` (which end with :meth:`write_result`) and end the job; the result."""
        job = self.job
        tail: EventTail | None = None
        result: dict[str, Any] | None = None
        try:
            with ExitStack() as shown:  # the console shows the end event too
                try:  # a console that cannot start (ray.log refused) fails the job, with its event
                    console = None
                    try:
                        console = shown.enter_context(self.show(job)) if self.show else None
                    finally:  # the other callbacks get the events also when the console failed
                        if isinstance(console, LifecycleCallback):  # shows the events it is given
                            self.callbacks.append(console)
                            self.listeners.append(console)
                        if self.listeners and job.sink is not None:
                            tail = EventTail(job, self.listeners)
                            shown.callback(tail.close, 5.0)  # stopped before the console closes
                    result = stages(self)
                    if self.result_path is None:
                        raise RuntimeError("the job's stages ended without writing a result")
                except BaseException as exc:
                    failed, error = failure_event(exc), exc
                    self._end(tail, lambda callback: callback.on_failed(job, failed, error))
                    raise
                finished = JobFinished(result=str(self.result_path), seconds=self.seconds())
                self._end(tail, lambda callback: callback.on_finished(job, finished))
            if tail is not None and tail.error is not None:
                raise tail.error
            if result is None:  # the console's exit swallowed the stage's error (job_failed written)
                raise RuntimeError("the job failed and its console hid why: see job_failed in "
                                   f"{job.layout.events}")
        except BaseException as exc:  # the failed job's own error, an end hook's or the console's
            if tail is not None and tail.error is not None and tail.error is not exc:
                exc.add_note(f"a lifecycle callback failed too: {tail.error!r}")
            raise
        finally:
            if tail is not None:
                tail.close(timeout_s=5.0)  # closed already, unless the end itself failed
            job.close()  # the driver lock: another driver may run this job id from now on
        return result

    def _end(self, tail: EventTail | None, tell: Callable[[LifecycleCallback], None]) -> None:
        """Write the end event, let the tail hand it over, then tell the other callbacks."""
        first, *others = self.callbacks
        tell(first)  # EventStream: the end event is in events.jsonl from here on
        if tail is not None:
            tail.close()
        for callback in others:
            tell(callback)
