"""A job's status, derived from its events alone (``raykd status``, the control plane's
follower): state, stage, progress, attempt, the latest metrics.

Torch-free.
"""

from __future__ import annotations

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


def _open_stage(events: list[Any]) -> str | None:
    """The latest stage started and not finished among ``events``."""
    open_stages: list[str] = []
    for e in events:
        if e.type == "stage_started":
            open_stages.append(e.stage)
        elif e.type == "stage_finished" and e.stage in open_stages:
            del open_stages[len(open_stages) - 1 - open_stages[::-1].index(e.stage)]
    return open_stages[-1] if open_stages else None


def _progress(events: list[Any], started: JobStarted | None) -> float:
    """The one definition of a job's progress (the API's ``progress``; the dashboard reads it).

    Distinct finished epochs over the job's epochs (``total_epochs``), all attempts: a run's
    (student, generation, epoch) from ``epoch`` events, every epoch of a finished student;
    a sweep's (trial, iteration) from ``trial`` events, every epoch of a trial that is done
    (one ASHA stopped early included).
    """
    if started is None or started.total_epochs <= 0:
        return 0.0
    per_student = started.total_epochs // max(1, started.students)
    done: set[tuple[Any, ...]] = set()
    epochs_of: dict[tuple[int, int], int] = {}
    for e in events:
        if isinstance(e, Epoch):
            done.add((e.student, e.generation, e.epoch))
            epochs_of[(e.student, e.generation)] = e.epochs
        elif isinstance(e, StudentFinished):
            key = (e.student, e.generation)
            done.update((*key, n) for n in range(1, epochs_of.get(key, per_student) + 1))
        elif isinstance(e, Trial):
            done.update(_trial_epochs(e, per_student))
    return min(1.0, len(done) / started.total_epochs)


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
