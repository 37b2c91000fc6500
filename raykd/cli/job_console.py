"""The console of ``raykd run``: Ray's output in the job's ``ray.log``, the job's events shown.

A :class:`~raykd.engine.LifecycleCallback` of the job's lifecycle: it gets the events from
the job's one event tail (this attempt's ``job_started`` to its end event, whichever process
wrote them) and shows each as a raykd line, with a progress bar on a terminal
(:class:`raykd.console.Display`). Imported when a job runs (it loads the engine).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from raykd.console import Display, divert_to_job, err
from raykd.console_text import event_line
from raykd.engine import Job, LifecycleCallback


class ConsoleEvents(LifecycleCallback):
    """Shows each event of the job on ``display`` (a line, and the bar moved).

    Showing is best effort: a terminal that went away (a pipe closed by ``head``, a closed
    window) or a display error ends the showing with one line on stderr, never the job.
    """

    def __init__(self, display: Display) -> None:
        self.display = display
        self.stopped = False

    def on_event(self, job: Job, event: Any) -> None:
        if self.stopped:
            return
        try:
            self.display.event(event)
            line = event_line(event)
            if line:
                self.display.line(line)
        except Exception as exc:  # noqa: BLE001 - the job goes on without its console
            self.stopped = True
            try:
                err().write(f"raykd: the console stopped showing the job's events "
                            f"({type(exc).__name__}: {exc}); they are in {job.layout.events}\n")
                err().flush()
            except OSError:
                pass  # stderr is gone too


@contextmanager
def job_console(job: Job) -> Iterator[ConsoleEvents]:
    """Ray's output diverted to the job's ``ray.log`` (one line says where), then the display
    made on the terminal's own stream: the lifecycle calls what this gives with each event."""
    with divert_to_job(job), Display() as display:
        yield ConsoleEvents(display)
