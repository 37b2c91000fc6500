"""``/api/v1/jobs``: submit, list, inspect, stream, cancel, retry, delete, download.

Thin routes: validation is the pydantic models', persistence the store's, Ray the
scheduler's. Every error is a 4xx with a message naming what was wrong.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import json
import os
import re
import shutil
import stat
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Header, HTTPException, Query, Request, Response
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, PlainTextResponse, StreamingResponse
from pydantic import BaseModel, TypeAdapter
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from starlette.concurrency import run_in_threadpool

from raykd.core.jobdir import JobIdError, check_job_id, new_job_id
from raykd.core.spec import JobSpec
from raykd.core.states import FINAL_STATES, TERMINAL_EVENTS
from raykd.service.audit import Audit
from raykd.service.deps import JOB_ID_HELP, CurrentUser, OwnedJob, State, User, no_job, read
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
from raykd.service.schemas import (
    ERROR_RESPONSES,
    LABEL,
    Artifact,
    JobCreate,
    JobPage,
    JobPatch,
    JobPublic,
    MetricPoint,
)
from raykd.service.store import JobRow

router = APIRouter(prefix="/api/v1/jobs", tags=["jobs"], responses=ERROR_RESPONSES)
_PUBLIC_LIST = TypeAdapter(list[JobPublic])
ARTIFACT_SUFFIXES = (".json", ".jsonl", ".csv", ".png", ".safetensors", ".md", ".log")
HIDDEN_DIRS = ("ray_train", "tune", "tune_train", "logits")
MAX_SEQ = 2**62  # an event seq (and `after`) fits a 64-bit database integer
MAX_LABEL_FILTERS = 16


def public(state: State, row: JobRow, *, full: bool = False) -> JobPublic:
    """The API view of a stored job."""
    return _public(row, full=full, labels=state.store.labels([row.id])[row.id],
                   position=state.store.queue_position(row))


def public_many(state: State, rows: list[Any]) -> list[JobPublic]:
    """The list view of ``rows`` (:class:`JobSummary` rows of ``store.page``)."""
    return _PUBLIC_LIST.validate_python(_summaries(state, rows))


def _summaries(state: State, rows: list[Any]) -> list[dict[str, Any]]:
    """``rows`` as :class:`JobPublic` fields, to validate all at once: labels and queue
    positions in one query each, not per row."""
    ids = [r.id for r in rows]
    labels, positions = state.store.labels(ids), state.store.queue_positions(ids)
    out = []
    for r in rows:
        item = r._asdict()
        item["latest_metrics"] = item["latest_metrics"] or {}
        item["labels"], item["queue_position"] = labels[r.id], positions.get(r.id)
        out.append(item)
    return out


def _public(row: Any, *, full: bool, labels: dict[str, str], position: int | None) -> JobPublic:
    return JobPublic(
        id=row.id, name=row.name, kind=row.kind, owner=row.owner, state=row.state,  # type: ignore[arg-type]
        priority=row.priority, max_run_s=row.max_run_s, labels=labels, queue_position=position,
        stage=row.stage, progress=row.progress, latest_metrics=row.latest_metrics or {}, error=row.error,
        note=row.note, attempts=row.attempts, created_at=row.created_at, started_at=row.started_at,
        finished_at=row.finished_at, spec=row.spec if full else None, result=row.result if full else None,
    )


def answer(model: BaseModel, status_code: int = 200) -> Response:
    """``model`` as the JSON FastAPI would send for it, serialized once (pydantic's
    serializer): a route that returns this skips FastAPI's second validation of its result."""
    return Response(model.model_dump_json().encode(), status_code=status_code,
                    media_type="application/json")


def _check_job_id(job_id: str) -> None:
    """422 for a ``job_id`` that is not a valid id or that the storage layout reserves."""
    try:
        check_job_id(job_id, field="job_id", reserved=True)
    except JobIdError as err:
        raise HTTPException(422, str(err)) from None


@router.post("", status_code=201, response_model=JobPublic, summary="Submit a run or sweep spec")
async def submit(body: JobCreate, user: CurrentUser, request: Request, audit: Audit,
                 idempotency_key: Annotated[str | None, Header(
                     max_length=128, description="Makes a retry safe: the same key from the same "
                     "user returns the job its first request made (200) instead of a second one "
                     "(201). Any string of up to 128 characters, e.g. a UUID.")] = None,
                 ) -> Response:
    """Store the job as ``queued``; the scheduler starts it when a slot frees.

    The same ``Idempotency-Key`` (or ``job_id``) from the same user with the same body
    returns the job already made (200) instead of a second one; with another body, 409.
    """
    # async: the checks are CPU work, SQLite's reads and (when no other thread of this
    # process is writing) its insert run on the loop; Ray and a taken write turn go to a thread
    state = request.app.state.raykd
    for k, v in body.labels.items():
        if not (_ok_label(k) and _ok_label(v)):
            raise HTTPException(422, f"labels.{k[:64]}: keys and values are 1-64 of letters, digits, . _ -")
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
        return answer(await read(state.store, public, state, existing, full=True))
    if not user.admin and await read(state.store, _unfinished, state, user.name) \
            >= state.settings.max_jobs_per_user:
        raise HTTPException(422, f"you have {state.settings.max_jobs_per_user} jobs queued or running, "
                                 "this service's limit per user (RAYKD_MAX_JOBS_PER_USER): wait "
                                 "for one to finish, or cancel one")
    name = body.name or spec.name
    job_id = body.job_id or new_job_id(name)
    if body.job_id and await run_in_threadpool(state.settings.layout.job(job_id).root.exists):
        raise _unavailable(job_id)  # an earlier run's files: said as for any taken id
    row = JobRow(id=job_id, name=name, kind="sweep" if spec.sweep else "run",
                 owner=user.name, state="queued", priority=body.priority,
                 spec=json.loads(spec.model_dump_json()), idempotency_key=idempotency_key,
                 request_hash=digest, max_run_s=max_run_s, created_at=time.time(), latest_metrics={}, attempts=0,
                 progress=0.0, last_seq=0, cancel_requested=False)
    entry = audit.entry("submit", row.id, name=name, priority=body.priority)
    try:  # the job and its audit entry: one transaction, written in a thread: a write can wait
        # for SQLite's lock (another process's writer, up to the busy timeout), never the loop
        await run_in_threadpool(state.store.add, row, body.labels, entry)
    except IntegrityError:  # a concurrent request with the same key or id won the race
        existing = await read(state.store, _existing, state, user.name, idempotency_key,
                              body.job_id, digest)
        if existing is None:
            raise _unavailable(job_id) from None
        return answer(await read(state.store, public, state, existing, full=True))
    position = await read(state.store, state.store.queue_position, row)
    job = _public(row, full=True, labels=body.labels, position=position)
    return answer(job, status_code=201)  # serialized once (no second validation)


def _within_limits(state: State, user: User, body: JobCreate, spec: JobSpec) -> float:
    """The job's deadline, once the spec is within the user's limits and the cluster; else
    LimitError (a 422 naming the limit). The admin is held only to the cluster and the cap."""
    if not user.admin:
        check_limits(spec, state.settings)
    check_priority(body.priority, user.admin, state.settings)
    max_run_s = deadline(body.max_run_s, state.settings)
    if state.settings.check_cluster_fit and getattr(state, "cluster", None) is not None:
        check_fit(spec, state.cluster.get())
    return max_run_s


def _unfinished(state: State, owner: str) -> int:
    """How many of ``owner``'s jobs are not final (queued, submitting, pending, running)."""
    with state.store.sessions() as s:
        return int(s.scalar(select(func.count()).select_from(JobRow).where(
            JobRow.owner == owner, JobRow.state.not_in(FINAL_STATES))) or 0)


def _ok_label(text: str) -> bool:
    return re.fullmatch(LABEL, text) is not None


def request_hash(body: JobCreate) -> str:
    """sha256 of the request as validated (keys sorted): what an idempotent retry must repeat."""
    canonical = json.dumps(body.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _existing(state: State, owner: str, key: str | None, job_id: str | None,
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
        raise HTTPException(409, f"{what} was already used for a different request (job {row.id!r}); "
                                 "a retry must send the same body: use a new key (or job_id) for "
                                 "a new job")


def _unavailable(job_id: str) -> HTTPException:
    """The one answer for an id that cannot be had, whoever or whatever holds it."""
    return HTTPException(409, f"job_id {job_id!r} is not available: choose another, or leave "
                              "job_id out for a generated one")


@router.get("", response_model=JobPage, summary="List jobs (filter, sort, cursor pages)")
async def list_jobs(user: CurrentUser, request: Request,
              status: Annotated[str | None, Query(
                  alias="state", description="Only jobs in this state: queued, submitting, pending, "
                  "running, succeeded, failed, cancelled or timed_out.")] = None,
              name: Annotated[str | None, Query(
                  max_length=64, description="Only jobs with exactly this display name.")] = None,
              label: Annotated[list[str] | None, Query(
                  description="Only jobs with this label, as key=value; repeat it to require "
                  "several.")] = None,
              limit: Annotated[int, Query(ge=1, le=500, description="Jobs per page, 1-500.")] = 50,
              cursor: Annotated[str | None, Query(
                  max_length=512, description="Where the page starts: the previous page's "
                  "next_cursor; omit it for the first page.")] = None,
              order: Annotated[str, Query(
                  pattern="^(asc|desc)$", description="By submission time: desc (newest first) or "
                  "asc.")] = "desc") -> Response:
    # async, reading SQLite on the loop (deps.read): no thread hop; serialized once
    if len(label or []) > MAX_LABEL_FILTERS:
        raise HTTPException(422, f"{len(label or [])} label filters: give at most {MAX_LABEL_FILTERS} "
                                 "(a job has at most 16 labels)")
    labels = {}
    for item in label or []:
        k, sep, v = item.partition("=")
        if not sep or not _ok_label(k) or not _ok_label(v):
            raise HTTPException(422, f"label={item[:80]!r}: expected key=value")
        labels[k] = v
    state = request.app.state.raykd  # not the State dependency: one fewer to solve
    try:
        page = await read(state.store, _page, state, owner=None if user.admin else user.name,
                          state=status, name=name, labels=labels, limit=limit, cursor=cursor,
                          ascending=order == "asc")
    except ValueError as err:
        raise HTTPException(400, str(err)) from None
    return answer(page)


def _page(service: State, **query: Any) -> JobPage:
    rows, nxt = service.store.page(**query)  # validated at once, not one JobPublic per row
    return JobPage.model_validate({"items": _summaries(service, rows), "next_cursor": nxt})


@router.get("/{job_id}", response_model=JobPublic, summary="One job: status, stage, progress, result")
async def get_job(job_id: Annotated[str, PathParam(description=JOB_ID_HELP)], user: CurrentUser,
                  request: Request) -> Response:
    # async, one read of the row, its labels and queue position on one connection (SQLite:
    # on the loop, deps.read), serialized once: no thread hops, no ORM, no second validation
    store = request.app.state.raykd.store  # not the State dependency: one fewer to solve
    view = await read(store, store.view, job_id) if len(job_id) <= 160 else None
    if view is None or (not user.admin and view["owner"] != user.name):
        raise no_job(job_id)
    return answer(JobPublic.model_validate(view))


@router.patch("/{job_id}", response_model=JobPublic, summary="Re-prioritise a queued job")
def patch_job(body: JobPatch, row: OwnedJob, state: State, user: CurrentUser, audit: Audit) -> JobPublic:
    try:
        check_priority(body.priority, user.admin, state.settings)
    except PolicyError as err:
        raise HTTPException(422, str(err)) from None
    with state.scheduler.lock:  # the scheduler does not submit it meanwhile
        row = _current(state, row)
        if row.state != "queued":
            raise HTTPException(409, f"job {row.id!r} is {row.state}; only queued jobs can be re-prioritised")
        row = state.store.update(row.id, priority=body.priority)
    audit("priority", row.id, priority=body.priority)
    return public(state, row, full=True)


def _current(state: State, row: JobRow) -> JobRow:
    """``row`` as stored now (under the scheduler's lock); 404 once it is gone."""
    current = state.store.get(row.id)
    if current is None:
        raise HTTPException(404, f"no job {row.id!r}")
    return current


@router.post("/{job_id}/cancel", response_model=JobPublic, summary="Cancel a queued or running job")
def cancel(row: OwnedJob, state: State, audit: Audit) -> JobPublic:
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
            row = state.store.update(row.id, state="cancelled", cancel_requested=True, error="cancelled",
                                     finished_at=time.time())
            return public(state, row, full=True)
        state.store.update(row.id, cancel_requested=True)
    if row.submission_id:
        try:
            state.ray.stop(row.submission_id)  # Ray sends SIGTERM: the job writes 'cancelled'
        except RayUnavailable as err:
            raise HTTPException(503, f"job {row.id!r}: the cancel is recorded, but {err}; the "
                                     "service stops the job when Ray answers again") from None
    return public(state, state.store.get(row.id) or row, full=True)


@router.post("/{job_id}/retry", response_model=JobPublic, summary="Run a final job again (resumes)")
def retry(row: OwnedJob, state: State, audit: Audit) -> JobPublic:
    with state.scheduler.lock:
        row = _current(state, row)
        if row.state not in FINAL_STATES:
            raise HTTPException(409, f"job {row.id!r} is {row.state}; only a finished job can be retried")
        row = state.store.update(  # the new attempt starts with none of the last one's results
            row.id, state="queued", cancel_requested=False, error=None, note="retry", finished_at=None,
            created_at=time.time(), result=None, progress=0.0, stage=None, latest_metrics={},
            started_at=None)
    audit("retry", row.id)
    return public(state, row, full=True)


@router.delete("/{job_id}", status_code=204, summary="Delete a final job, its files and events")
def delete(row: OwnedJob, state: State, audit: Audit) -> Response:
    """Delete the job, its files, and Ray's records of its submissions (so its id can be reused)."""
    with state.scheduler.lock:
        row = _current(state, row)
        if row.state not in FINAL_STATES:
            raise HTTPException(409, f"job {row.id!r} is {row.state}; cancel it first")
        state.store.delete(row.id)
    shutil.rmtree(state.settings.layout.job(row.id).root, ignore_errors=True)
    spec_file(state.settings, row.id).unlink(missing_ok=True)
    _forget_in_ray(state, row)
    audit("delete", row.id)
    return Response(status_code=204)


def _forget_in_ray(state: State, row: JobRow) -> None:
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


@router.get("/{job_id}/metrics", response_model=list[MetricPoint], summary="Epoch and trial metrics")
def metrics(row: OwnedJob, state: State) -> list[MetricPoint]:
    out = []
    for seq, _, body in state.store.events(row.id, types=("epoch", "trial")):
        e = json.loads(body)
        out.append(MetricPoint(seq=seq, student=e.get("student"), generation=e.get("generation"),
                               trial_id=e.get("trial_id"), epoch=e.get("epoch"), metrics=e.get("metrics", {})))
    return out


@router.get("/{job_id}/events", summary="Server-Sent Events of the job (resume with Last-Event-ID)",
            response_class=StreamingResponse)
async def events(row: OwnedJob, state: State, request: Request,
                 last_event_id: Annotated[str | None, Header(
                     description="Resume after this event: the seq (the SSE id) of the last event "
                     "received, as EventSource sends it on reconnecting. Omitted: from the first "
                     "event.")] = None,
                 after: Annotated[int | None, Query(
                     ge=0, le=MAX_SEQ, description="Stream only the events with seq > after (0: "
                     "all); the same as Last-Event-ID, and used instead of it when both are "
                     "given.")] = None,
                 ) -> StreamingResponse:
    start = after if after is not None else _int(last_event_id)
    return StreamingResponse(_sse(state, row.id, start, request), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def _int(value: str | None) -> int:
    """The seq in a ``Last-Event-ID`` header; 400 unless a whole number 0..MAX_SEQ."""
    text = (value or "0").strip()
    if not (text.isascii() and text.isdigit()) or len(text) > 19 or int(text) > MAX_SEQ:
        raise HTTPException(400, f"Last-Event-ID {text[:40]!r} is not an event seq (a whole number "
                                 f"from 0 to {MAX_SEQ})")
    return int(text)


async def _sse(state: State, job_id: str, seen: int, request: Request) -> AsyncIterator[bytes]:
    """Stored events after ``seen``, then new ones as the follower stores them."""
    quiet = time.monotonic()
    while True:
        rows = await asyncio.to_thread(state.store.events, job_id, after=seen)
        for seq, kind, body in rows:
            seen = seq
            yield f"id: {seq}\nevent: {kind}\ndata: {body}\n\n".encode()
            quiet = time.monotonic()
        row = await asyncio.to_thread(state.store.get, job_id)
        if row is None or (row.state in FINAL_STATES and (not rows or rows[-1][1] in TERMINAL_EVENTS)):
            if row is None or await asyncio.to_thread(_caught_up, state, job_id, seen):
                return
        if await request.is_disconnected():
            return
        if time.monotonic() - quiet > 15:
            yield b": keepalive\n\n"
            quiet = time.monotonic()
        await asyncio.sleep(state.settings.poll_s / 2)


def _caught_up(state: State, job_id: str, seen: int) -> bool:
    return not state.store.events(job_id, after=seen)


@router.get("/{job_id}/logs", response_class=PlainTextResponse, summary="The driver's log")
async def logs(row: OwnedJob, state: State,
               offset: Annotated[int, Query(ge=0, description="Start at this byte of the log (UTF-8): "
                                            "the number of bytes already read, to resume.")] = 0,
               tail: Annotated[int | None, Query(ge=1, le=100_000,
                                                 description="Only the last N lines.")] = None,
               follow: Annotated[bool, Query(description="Keep the response open and stream new "
                                             "output until the job ends.")] = False) -> Response:
    if not follow:
        try:  # in a thread: the Ray SDK blocks, up to its timeout while Ray is away
            data = await asyncio.to_thread(_log_bytes, state, row, offset, tail)
        except RayUnavailable as err:
            raise HTTPException(503, str(err)) from None
        return Response(data, media_type="text/plain; charset=utf-8")

    async def stream() -> AsyncIterator[bytes]:
        pos = offset
        async for data in _tailed(state, row, offset):  # Ray's tail API: each piece once
            pos += len(data)
            yield data
        current: JobRow | None = await asyncio.to_thread(state.store.get, row.id)
        submission = current.submission_id if current is not None else None
        while current is not None:  # the job ended (or Ray's stream broke): what is left, polled
            if current.submission_id != submission:  # retried meanwhile: the new attempt's log
                submission, pos = current.submission_id, 0
            try:
                data = await asyncio.to_thread(_log_bytes, state, current, pos, None)
            except RayUnavailable:
                data = b""  # Ray is away: keep the stream, try again next round
            if data:
                pos += len(data)  # bytes, as the client counts them
                yield data
            if current.state in FINAL_STATES:
                return
            await asyncio.sleep(1.0)
            current = await asyncio.to_thread(state.store.get, row.id)

    return StreamingResponse(stream(), media_type="text/plain; charset=utf-8")


async def _tailed(state: State, row: JobRow, offset: int) -> AsyncIterator[bytes]:
    """The driver log from byte ``offset`` as Ray streams it, until the job ends (see RayJobs.tail)."""
    current: JobRow | None = row
    while current is not None and current.submission_id is None and current.state not in FINAL_STATES:
        await asyncio.sleep(1.0)  # not submitted yet
        current = await asyncio.to_thread(state.store.get, row.id)
    if current is None or current.submission_id is None:
        return
    skip = offset
    try:
        async for chunk in state.ray.tail(current.submission_id):
            data = chunk.encode()
            cut = min(skip, len(data))
            skip -= cut
            if data[cut:]:
                yield data[cut:]
    except RayUnavailable:
        return


def _log_bytes(state: State, row: JobRow, offset: int, tail: int | None) -> bytes:
    """The driver log as UTF-8 from byte ``offset`` (or its last ``tail`` lines)."""
    text = state.ray.logs(row.submission_id) if row.submission_id else ""
    if tail is not None:
        return ("\n".join(text.splitlines()[-tail:]) + ("\n" if text else "")).encode()
    return text.encode()[offset:]


def _job_root(state: State, row: JobRow) -> Path:
    """``<storage>/<id>``: the storage root resolved, the job's own directory never (a job
    directory replaced by a link is not followed: it is not listed, and nothing opens it)."""
    return state.settings.storage.resolve() / state.settings.layout.job(row.id).root.name


def _artifacts(state: State, row: JobRow) -> list[tuple[str, Path]]:
    """The downloadable files of a job: regular files with an artifact suffix, outside the
    hidden directories, reached without a link (a link, or a file under a linked directory,
    is not listed: its target's name and size stay unknown)."""
    root = _job_root(state, row)
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


@router.get("/{job_id}/artifacts", response_model=list[Artifact], summary="Files to download")
def artifacts(row: OwnedJob, state: State) -> list[Artifact]:
    return [Artifact(path=rel, size=p.lstat().st_size) for rel, p in _artifacts(state, row)]


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

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
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


@router.get("/{job_id}/artifacts/{path:path}", summary="Download one artifact",
            response_class=FileResponse)
def download(path: Annotated[str, PathParam(
                 description="The file's path in the job's directory, as GET .../artifacts lists "
                 "it (e.g. result.json).")],
             row: OwnedJob, state: State, audit: Audit) -> FileResponse:
    root = _job_root(state, row)
    if path not in dict(_artifacts(state, row)):
        raise HTTPException(404, f"no artifact {path[:200]!r} in job {row.id!r}; see GET "
                                 ".../artifacts")
    try:  # opened once, here; what is sent is what was opened
        fd = open_artifact(root, path)
    except OSError:
        raise HTTPException(404, f"artifact {path[:200]!r} of job {row.id!r} is not a regular file "
                                 "inside the job's directory (links are not followed)") from None
    try:
        audit("download", row.id, path=path)
        return OpenedFileResponse(fd, filename=path.rsplit("/", 1)[-1])
    except BaseException:
        os.close(fd)  # never left open when the audit (or the response) fails
        raise
