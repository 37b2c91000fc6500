"""Request and response models of the REST API (``/api/v1``): the contract of the client.

``JobCreate`` in, ``JobPublic`` out; ``JobPage`` for lists (cursor pagination). Every
field is described, so the OpenAPI schema documents the API.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from raykd.core.jobdir import JOB_ID_PATTERN
from raykd.core.spec import JobSpec
from raykd.core.states import JobState

LABEL = r"^[A-Za-z0-9_.-]{1,64}$"


class JobCreate(BaseModel):
    """A job to submit: a run or sweep spec (a spec with a ``sweep`` section is a sweep)."""

    model_config = ConfigDict(extra="forbid")

    spec: JobSpec = Field(description="The job spec, validated like `raykd validate` does.")
    name: str | None = Field(default=None, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$",
                             description="Display name; default: the spec's name.")
    priority: int = Field(default=0, ge=-100, le=100,
                          description="Higher runs first among queued jobs; equal priorities run FIFO.")
    labels: dict[str, str] = Field(default_factory=dict, max_length=16,
                                   description="Free key/value labels to filter by (keys and values "
                                               "1-64 of letters, digits, . _ -).")
    max_run_s: float | None = Field(default=None, gt=0, le=10**9, description=(
        "The job's deadline in seconds of running on Ray: past it the job is stopped and "
        "ends timed_out. Default: the service's RAYKD_DEFAULT_MAX_RUN_S; at most "
        "RAYKD_MAX_RUN_S_CAP."))
    job_id: str | None = Field(default=None, pattern=JOB_ID_PATTERN,
                               description="Client-chosen id: submitting it again returns the same "
                                           "job (like an Idempotency-Key).")


class JobPatch(BaseModel):
    """Changes to a queued job."""

    model_config = ConfigDict(extra="forbid")

    priority: int = Field(ge=-100, le=100, description="New priority of a queued job.")


class JobPublic(BaseModel):
    """A job as the API shows it."""

    id: str = Field(description="The job id (also Ray's submission_id and the directory name).")
    name: str = Field(description="Display name.")
    kind: Literal["run", "sweep"] = Field(description="A distillation run or a sweep.")
    owner: str = Field(description="The user whose token submitted it.")
    state: JobState = Field(description="queued (waiting for a slot), submitting (being handed to "
                                        "Ray), pending (submitted to Ray, not started), running, "
                                        "succeeded, failed, cancelled or timed_out (stopped at its "
                                        "max_run_s).")
    priority: int = Field(description="Queue priority (higher first).")
    max_run_s: float | None = Field(default=None, description="The job's deadline: seconds it may run "
                                                              "on Ray before it is stopped (timed_out).")
    labels: dict[str, str] = Field(description="The job's labels.")
    queue_position: int | None = Field(default=None, description="1 = next to start; None unless queued.")
    stage: str | None = Field(default=None, description="The stage running now, or where it stopped.")
    progress: float = Field(default=0.0, ge=0, le=1, description="Finished student epochs / all epochs.")
    latest_metrics: dict[str, float | None] = Field(default_factory=dict,
                                                    description="Metrics of the latest epoch.")
    error: str | None = Field(default=None, description="Why it failed or was cancelled.")
    note: str | None = Field(default=None, description="What the service did, e.g. on reconciling "
                                                       "after a restart.")
    attempts: int = Field(default=0, description="Times it was submitted to Ray (retries count).")
    created_at: float = Field(description="Unix time of submission.")
    started_at: float | None = Field(default=None, description="Unix time it started on Ray.")
    finished_at: float | None = Field(default=None, description="Unix time it ended.")
    spec: dict[str, Any] | None = Field(default=None, description="The spec (in single-job views).")
    result: dict[str, Any] | None = Field(default=None, description="result.json / sweep.json summary "
                                                                    "(in single-job views, when done).")


class JobPage(BaseModel):
    """One page of jobs; pass ``next_cursor`` as ``cursor`` for the next."""

    items: list[JobPublic] = Field(description="The jobs of this page.")
    next_cursor: str | None = Field(default=None, description="Cursor of the next page; None at the end.")


class Artifact(BaseModel):
    """A file of a job that can be downloaded."""

    path: str = Field(description="Path relative to the job's directory.")
    size: int = Field(description="Size in bytes.")


class MetricPoint(BaseModel):
    """One epoch of one student (or one trial report)."""

    seq: int = Field(description="The event's seq.")
    student: int | None = Field(default=None, description="Method entry (runs).")
    generation: int | None = Field(default=None, description="Born-again generation (runs).")
    trial_id: str | None = Field(default=None, description="Trial (sweeps).")
    epoch: int | None = Field(default=None, description="Epoch, from 1.")
    metrics: dict[str, float | None] = Field(description="train_loss, val_accuracy, ...")


class FieldError(BaseModel):
    """One invalid field of a request (422)."""

    loc: list[str] = Field(description='Where: "body", "query", "path" or "header", then the '
                                       'field\'s path, e.g. ["body", "spec", "train", "lr"].')
    msg: str = Field(description="What is wrong and what would be accepted.")
    input: str | int | float | bool | None = Field(
        default=None, description="The value given, when it is a short scalar (absent otherwise).")


class Problem(BaseModel):
    """An error answer (4xx): what was wrong and what is accepted."""

    detail: str | list[FieldError] = Field(
        description="A message naming what was wrong and what is accepted, or (422, when the body, "
                    "a query parameter or a header does not validate) one entry per invalid field.")


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    "4XX": {"model": Problem, "description": "A client error: a message naming what was wrong, or "
                                            "(422) the invalid fields."},
}
"""The error answers every ``/api/v1`` route documents (FastAPI's default 422 schema shows
fields this API does not send)."""
