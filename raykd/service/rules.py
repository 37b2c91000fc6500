"""The service's rules for jobs, in one place: the limits a submission must keep, and what
submit, re-prioritise, cancel, retry, delete and download do (who may see a job is
:mod:`raykd.service.ownership`'s: a rule acts on a job the caller may see).

The REST routes (:mod:`raykd.service.routes.jobs`) and the dashboard
(:mod:`raykd.service.web.routes`) parse a request, call a rule here and shape its answer;
neither decides anything itself. A rule refuses with the HTTP error the API documents
(status and a message naming what was wrong and what is accepted).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time

from fastapi import HTTPException
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from starlette.concurrency import run_in_threadpool

from raykd.core.jobdir import JobIdError, check_job_id, new_job_id
from raykd.core.spec import JobSpec
from raykd.core.states import FINAL_STATES
from raykd.service.artifacts import OpenedFileResponse, job_root, listed, open_artifact
from raykd.service.audit import Auditor
from raykd.service.auth import User
from raykd.service.job_views import public, public_view
from raykd.service.policy import (
    PolicyError,
    admit,
    check_fit,
    check_limits,
    check_priority,
    deadline,
)
from raykd.service.ray_jobs import RayUnavailable
from raykd.service.scheduler import spec_file, submission_ids
from raykd.service.schemas import LABEL, JobCreate, JobPublic
from raykd.service.state import ServiceState
from raykd.service.store import read
from raykd.service.tables import JobRow

MAX_LABEL_FILTERS = 16


# --- limits -----------------------------------------------------------------------------


def _ok_label(text: str) -> bool:
    return re.fullmatch(LABEL, text) is not None


def check_labels(labels: dict[str, str]) -> None:
    """422 unless every label key and value is 1-64 of letters, digits, . _ -"""
    for k, v in labels.items():
        if not (_ok_label(k) and _ok_label(v)):
            raise HTTPException(422, f"labels.{k[:64]}: keys and values are 1-64 of letters, "
                                     "digits, . _ -")


def label_filters(given: list[str]) -> dict[str, str]:
    """``key=value`` filters of a listing as a mapping; 422 for too many or a malformed one."""
    if len(given) > MAX_LABEL_FILTERS:
        raise HTTPException(422, f"{len(given)} label filters: give at most {MAX_LABEL_FILTERS} "
                                 "(a job has at most 16 labels)")
    labels = {}
    for item in given:
        k, sep, v = item.partition("=")
        if not sep or not _ok_label(k) or not _ok_label(v):
            raise HTTPException(422, f"label={item[:80]!r}: expected key=value")
        labels[k] = v
    return labels


def _within_limits(state: ServiceState, user: User, body: JobCreate, spec: JobSpec) -> float:
    """The job's deadline, once the spec is within the user's limits and the cluster; else
    LimitError (a 422 naming the limit). The admin is held only to the cluster and the cap."""
    if not user.admin:
        check_limits(spec, state.settings)
    check_priority(body.priority, user.admin, state.settings)
    max_run_s = deadline(body.max_run_s, state.settings)
    if state.settings.check_cluster_fit and state.cluster is not None:
        check_fit(spec, state.cluster.get())
    return max_run_s


def _unfinished(state: ServiceState, owner: str) -> int:
    """How many of ``owner``'s jobs are not final (queued, submitting, pending, running)."""
    with state.store.sessions() as s:
        return int(s.scalar(select(func.count()).select_from(JobRow).where(
            JobRow.owner == owner, JobRow.state.not_in(FINAL_STATES))) or 0)


def _check_job_id(job_id: str) -> None:
    """422 for a ``job_id`` that is not a valid id or that the storage layout reserves."""
    try:
        check_job_id(job_id, field="job_id", reserved=True)
    except JobIdError as err:
        raise HTTPException(422, str(err)) from None


# --- submit -----------------------------------------------------------------------------


async def submit(state: ServiceState, user: User, body: JobCreate, idempotency_key: str | None,
                 audit: Auditor) -> tuple[JobPublic, bool]:
    """Store the job as ``queued`` (the scheduler starts it when a slot frees): the job, and
    whether it is new (False: the one an earlier request with this key or job_id made)."""
    # async: the checks are CPU work, SQLite's reads and (when no other thread of this
    # process is writing) its insert run on the loop; Ray and a taken write turn go to a thread
    check_labels(body.labels)
    if state.settings.check_cluster_fit and state.cluster is not None and state.cluster.stale():
        await run_in_threadpool(state.cluster.get)  # asks Ray (up to seconds): not on the loop
    try:
        spec = admit(body.spec, state.settings)
        max_run_s = _within_limits(state, user, body, spec)
    except PolicyError as err:
        raise HTTPException(422, str(err)) from None
    if body.job_id is not None:
        _check_job_id(body.job_id)
    digest = request_hash(body)
    existing = await read(state.store, _existing, state, user.name, idempotency_key, body.job_id,
                          digest)
    if existing is not None:
        return await read(state.store, public, state, existing, full=True), False
    if not user.admin and await read(state.store, _unfinished, state, user.name) \
            >= state.settings.max_jobs_per_user:
        raise HTTPException(422, f"you have {state.settings.max_jobs_per_user} jobs queued or "
                                 "running, this service's limit per user "
                                 "(RAYKD_MAX_JOBS_PER_USER): wait for one to finish, or cancel one")
    name = body.name or spec.name
    job_id = body.job_id or new_job_id(name)
    if body.job_id and await run_in_threadpool(state.settings.layout.job(job_id).root.exists):
        raise _unavailable(job_id)  # an earlier run's files: said as for any taken id
    row = JobRow(id=job_id, name=name, kind="sweep" if spec.sweep else "run",
                 owner=user.name, state="queued", priority=body.priority,
                 spec=json.loads(spec.model_dump_json()), idempotency_key=idempotency_key,
                 request_hash=digest, max_run_s=max_run_s, created_at=time.time(),
                 latest_metrics={}, attempts=0, progress=0.0, last_seq=0, cancel_requested=False)
    entry = audit.entry("submit", row.id, name=name, priority=body.priority)
    try:  # the job and its audit entry: one transaction, written in a thread: a write can wait
        # for SQLite's lock (another process's writer, up to the busy timeout), never the loop
        await run_in_threadpool(state.store.add, row, body.labels, entry)
    except IntegrityError:  # a concurrent request with the same key or id won the race
        existing = await read(state.store, _existing, state, user.name, idempotency_key,
                              body.job_id, digest)
        if existing is None:
            raise _unavailable(job_id) from None
        return await read(state.store, public, state, existing, full=True), False
    position = await read(state.store, state.store.queue_position, row)
    return public_view(row, full=True, labels=body.labels, position=position), True


def request_hash(body: JobCreate) -> str:
    """sha256 of the request as validated (keys sorted): what an idempotent retry must repeat."""
    canonical = json.dumps(body.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _existing(state: ServiceState, owner: str, key: str | None, job_id: str | None,
              digest: str) -> JobRow | None:
    """The job an earlier request with this key (or this job_id) made; 409 when that request
    differs from this one, or when another user holds the id (said as for any taken id)."""
    if key:
        row = state.store.by_key(owner, key)
        if row is not None:
            _same_request(row, digest, f"Idempotency-Key {key[:128]!r}")
            return row
    if job_id:
        row = state.store.get(job_id)
        if row is not None and row.owner != owner:
            raise _unavailable(job_id)
        if row is not None:
            _same_request(row, digest, f"job_id {job_id!r}")
        return row
    return None


def _same_request(row: JobRow, digest: str, what: str) -> None:
    if row.request_hash is not None and row.request_hash != digest:
        raise HTTPException(409, f"{what} was already used for a different request (job "
                                 f"{row.id!r}); a retry must send the same body: use a new key "
                                 "(or job_id) for a new job")


def _unavailable(job_id: str) -> HTTPException:
    """The one answer for an id that cannot be had, whoever or whatever holds it."""
    return HTTPException(409, f"job_id {job_id!r} is not available: choose another, or leave "
                              "job_id out for a generated one")


# --- a job's life after submission ------------------------------------------------------


def _current(state: ServiceState, row: JobRow) -> JobRow:
    """``row`` as stored now (under the scheduler's lock); 404 once it is gone."""
    current = state.store.get(row.id)
    if current is None:
        raise HTTPException(404, f"no job {row.id!r}")
    return current


def reprioritise(state: ServiceState, user: User, row: JobRow, priority: int,
                 audit: Auditor) -> JobRow:
    """Give a queued job a new priority (a user only up to the service's cap); 409 otherwise."""
    try:
        check_priority(priority, user.admin, state.settings)
    except PolicyError as err:
        raise HTTPException(422, str(err)) from None
    with state.scheduler.lock:  # the scheduler does not submit it meanwhile
        row = _current(state, row)
        if row.state != "queued":
            raise HTTPException(409, f"job {row.id!r} is {row.state}; only queued jobs can be "
                                     "re-prioritised")
        row = _stored(state.store.update(row.id, priority=priority), row)
    audit("priority", row.id, priority=priority)
    return row


def cancel(state: ServiceState, row: JobRow, audit: Auditor) -> JobRow:
    """A queued job is cancelled at once; a running one is stopped (Ray sends SIGTERM).

    While Ray is unreachable the cancel is recorded and answered 503: the scheduler stops
    the job when Ray is back, and the job ends ``cancelled``.
    """
    audit("cancel", row.id)
    with state.scheduler.lock:  # a queued job answered "cancelled" is never submitted after
        row = _current(state, row)
        if row.state in FINAL_STATES:
            raise HTTPException(409, f"job {row.id!r} is already {row.state}")
        if row.state == "queued":
            return _stored(state.store.update(row.id, state="cancelled", cancel_requested=True,
                                              error="cancelled", finished_at=time.time()), row)
        state.store.update(row.id, cancel_requested=True)
    if row.submission_id:
        try:
            state.ray.stop(row.submission_id)  # Ray sends SIGTERM: the job writes 'cancelled'
        except RayUnavailable as err:
            raise HTTPException(503, f"job {row.id!r}: the cancel is recorded, but {err}; the "
                                     "service stops the job when Ray answers again") from None
    return state.store.get(row.id) or row


def retry(state: ServiceState, row: JobRow, audit: Auditor) -> JobRow:
    """Queue a final job again: its next attempt resumes from what the last one finished."""
    with state.scheduler.lock:
        row = _current(state, row)
        if row.state not in FINAL_STATES:
            raise HTTPException(409, f"job {row.id!r} is {row.state}; only a finished job can be "
                                     "retried")
        row = _stored(state.store.update(  # the new attempt starts with none of the last results
            row.id, state="queued", cancel_requested=False, error=None, note="retry",
            finished_at=None, created_at=time.time(), result=None, progress=0.0, stage=None,
            latest_metrics={}, started_at=None), row)
    audit("retry", row.id)
    return row


def delete(state: ServiceState, row: JobRow, audit: Auditor) -> None:
    """Delete a final job, its files, and Ray's records of its submissions (so its id can be
    reused); 409 while it is not final."""
    with state.scheduler.lock:
        row = _current(state, row)
        if row.state not in FINAL_STATES:
            raise HTTPException(409, f"job {row.id!r} is {row.state}; cancel it first")
        state.store.delete(row.id)
    shutil.rmtree(state.settings.layout.job(row.id).root, ignore_errors=True)
    spec_file(state.settings, row.id).unlink(missing_ok=True)
    _forget_in_ray(state, row)
    audit("delete", row.id)


def _stored(updated: JobRow | None, row: JobRow) -> JobRow:
    """The row an update returned (None only when deleted meanwhile, which the scheduler's
    lock rules out): ``row`` then."""
    return updated if updated is not None else row


def _forget_in_ray(state: ServiceState, row: JobRow) -> None:
    """Best effort: delete Ray's records of ``row``'s submissions (terminal ones; Ray keeps logs).

    Ray refuses a submission id it still holds; a job id used again after this delete then
    starts cleanly. Where this fails (Ray away), the next submission of the id is refused
    and that job fails with a message saying so; the queue moves on.
    """
    for sid in submission_ids(row):
        try:
            state.ray.delete(sid)
        except RayUnavailable:
            return


# --- artifacts --------------------------------------------------------------------------


def download(state: ServiceState, row: JobRow, path: str, audit: Auditor) -> OpenedFileResponse:
    """The artifact ``path`` of ``row``, opened once (what is sent is what was opened): 404
    unless it is listed and still a regular file reached without a link."""
    if path not in dict(listed(state.settings, row.id)):
        raise HTTPException(404, f"no artifact {path[:200]!r} in job {row.id!r}; see GET "
                                 ".../artifacts")
    try:
        fd = open_artifact(job_root(state.settings, row.id), path)
    except OSError:
        raise HTTPException(404, f"artifact {path[:200]!r} of job {row.id!r} is not a regular "
                                 "file inside the job's directory (links are not followed)"
                            ) from None
    try:
        audit("download", row.id, path=path)
        return OpenedFileResponse(fd, filename=path.rsplit("/", 1)[-1])
    except BaseException:
        os.close(fd)  # never left open when the audit (or the response) fails
        raise
