"""A job's status, derived from its events alone (``raykd status``, the control plane's
follower): state, stage, progress, attempt, the latest metrics.

Torch-free.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from raykd.core.events import Epoch, JobFailed, JobFinished, JobStarted, StudentFinished, Trial
from raykd.core.states import EventState

DIED_MESSAGE = (
    "the job's driver stopped without a final event (killed or lost); "
    "run the same job id again to resume"
)
"""The error of a job whose driver process is gone while its events show no end."""


class JobStatus(BaseModel):
    """Where a job stands, derived from its events (see :func:`job_status`)."""

    model_config = ConfigDict(extra="forbid")

    job_id: str = Field(description="The job's id.")
    state: EventState = Field(description="pending, running, succeeded, failed or cancelled.")
    stage: str | None = Field(
        default=None, description="The stage running now (or where the job stopped)."
    )
    progress: float = Field(
        default=0.0, ge=0.0, le=1.0, description="Finished student epochs / all the job's epochs."
    )
    latest_metrics: dict[str, float | None] = Field(
        default_factory=dict, description="Metrics of the latest epoch reported."
    )
    student: int | None = Field(default=None, description="Method entry of the latest epoch.")
    generation: int | None = Field(default=None, description="Generation of the latest epoch.")
    epoch: int | None = Field(default=None, description="The latest epoch reported, from 1.")
    epochs: int | None = Field(default=None, description="Epochs of that student.")
    attempt: int = Field(default=0, ge=0, description="The current run of the job (0: none yet).")
    started_at: float | None = Field(default=None, description="Unix time the job first started.")
    finished_at: float | None = Field(default=None, description="Unix time of its final event.")
    error: str | None = Field(default=None, description="Why it failed or was cancelled.")
    last_seq: int = Field(default=0, ge=0, description="seq of the latest event (0: none).")


def _current_attempt(events: list[Any]) -> list[Any]:
    """The events from the last ``job_started`` on (all of them when there is none)."""
    for i in range(len(events) - 1, -1, -1):
        if isinstance(events[i], JobStarted):
            return events[i:]
    return events


@dataclass
class OpenStages:
    """The stages started and not yet finished, fed events in order; ``current`` is the latest."""

    stack: list[str] = field(default_factory=list)

    def take(self, e: Any) -> None:
        """Open a stage on ``stage_started``; close its latest opening on ``stage_finished``."""
        if e.type == "stage_started":
            self.stack.append(e.stage)
        elif e.type == "stage_finished" and e.stage in self.stack:
            del self.stack[len(self.stack) - 1 - self.stack[::-1].index(e.stage)]

    @property
    def current(self) -> str | None:
        return self.stack[-1] if self.stack else None


@dataclass
class EpochsDone:
    """The one definition of a job's progress (the API's ``progress``; the dashboard reads it).

    progress = |distinct finished epochs| / ``total_epochs`` (of the attempt's
    ``job_started``), capped at 1, over every attempt fed. A run's finished epochs are
    (student, generation, epoch) keys from ``epoch`` events, and every epoch of a student
    whose ``student_finished`` arrived (as many as its last ``epoch`` event said, else
    total_epochs / students); a sweep's are (trial, iteration) keys from ``trial`` events,
    and every epoch of a trial that is done (one ASHA stopped early included).
    """

    done: set[tuple[Any, ...]] = field(default_factory=set)
    epochs_of: dict[tuple[int, int], int] = field(default_factory=dict)
    finished: dict[tuple[int, int], int | None] = field(default_factory=dict)
    trials_done: dict[str, Trial] = field(default_factory=dict)

    def take(self, e: Any) -> bool:
        """Count ``e`` if it finishes epochs; True when it was an epoch, student or trial event."""
        if isinstance(e, Epoch):
            self.done.add((e.student, e.generation, e.epoch))
            self.epochs_of[(e.student, e.generation)] = e.epochs
        elif isinstance(e, StudentFinished):
            key = (e.student, e.generation)
            self.finished[key] = self.epochs_of.get(key)
        elif isinstance(e, Trial):
            if e.done:
                self.trials_done[e.trial_id] = e  # all its epochs: how many, the start says
            else:
                self.done.update(_trial_epochs(e, 0))
        else:
            return False
        return True

    def fraction(self, started: JobStarted | None) -> float:
        """Finished epochs / ``started.total_epochs`` (0 before a start that names a total)."""
        if started is None or started.total_epochs <= 0:
            return 0.0
        per_student = started.total_epochs // max(1, started.students)
        done = set(self.done)
        for key, epochs in self.finished.items():
            done.update((*key, n) for n in range(1, (epochs or per_student) + 1))
        for trial in self.trials_done.values():
            done |= _trial_epochs(trial, per_student)
        return min(1.0, len(done) / started.total_epochs)


def _open_stage(events: list[Any]) -> str | None:
    """The latest stage started and not finished among ``events``."""
    stages = OpenStages()
    for e in events:
        stages.take(e)
    return stages.current


def _progress(events: list[Any], started: JobStarted | None) -> float:
    """Progress of a job whose current attempt began with ``started`` (see :class:`EpochsDone`)."""
    count = EpochsDone()
    for e in events:
        count.take(e)
    return count.fraction(started)


def _trial_epochs(e: Trial, per_trial: int) -> set[tuple[str, str, int]]:
    """The epochs one ``trial`` event says are finished: its iteration, or all when done."""
    if e.done:
        return {("trial", e.trial_id, n) for n in range(1, per_trial + 1)}
    it = e.metrics.get("training_iteration") or e.metrics.get("epoch")
    return {("trial", e.trial_id, int(it))} if it else set()


def job_status(
    events: list[Any], *, process_alive: bool | None = None, job_id: str = ""
) -> JobStatus:
    """A job's status from its events alone (plus, optionally, whether its driver lives).

    The last ``job_started`` opens the current attempt: a resumed job's earlier
    ``job_failed`` no longer counts, but its finished epochs still count for progress.
    With no events the job is pending. With no final event in the current attempt it is
    running, unless ``process_alive`` is False: then its driver died and it has failed.

    Args:
        events: The job's events in ``seq`` order (:func:`raykd.core.events.read_events`).
        process_alive: Whether the job's driver process runs; None when unknown.
        job_id: The job's id; by default the one the events carry.

    Returns:
        The derived status.
    """
    job_id = job_id or next((e.job_id for e in events if e.job_id), "")
    if not events:
        return JobStatus(job_id=job_id, state="pending")
    current = _current_attempt(events)
    started = current[0] if isinstance(current[0], JobStarted) else None
    first = next((e for e in events if isinstance(e, JobStarted)), None)
    last_epoch = next((e for e in reversed(events) if isinstance(e, Epoch)), None)
    status = JobStatus(
        job_id=job_id, state="running", stage=_open_stage(current),
        progress=_progress(events, started), attempt=started.attempt if started else 0,
        started_at=first.time if first else events[0].time,
        last_seq=max(e.seq for e in events),
    )
    if last_epoch is not None:
        status = status.model_copy(update={
            "latest_metrics": dict(last_epoch.metrics), "student": last_epoch.student,
            "generation": last_epoch.generation, "epoch": last_epoch.epoch,
            "epochs": last_epoch.epochs,
        })
    return _ended(status, current, process_alive)


def _ended(status: JobStatus, current: list[Any], process_alive: bool | None) -> JobStatus:
    """``status`` with the current attempt's end applied (or the driver's death)."""
    end = next((e for e in reversed(current) if isinstance(e, JobFinished | JobFailed)), None)
    if isinstance(end, JobFinished):
        return status.model_copy(update={
            "state": "succeeded", "stage": None, "progress": 1.0, "finished_at": end.time,
        })
    if isinstance(end, JobFailed):
        state = "cancelled" if end.kind == "cancelled" else "failed"
        return status.model_copy(
            update={"state": state, "error": end.message, "finished_at": end.time}
        )
    if process_alive is False:
        return status.model_copy(update={"state": "failed", "error": DIED_MESSAGE})
    return status
