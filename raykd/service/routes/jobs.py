"""``/api/v1/jobs``: submit, list, inspect, stream, cancel, retry, delete, download.

Thin routes: each parses its request, calls a rule of :mod:`raykd.service.rules` (or
:mod:`raykd.service.ownership`, or a stream of :mod:`raykd.service.streams`) and shapes the
answer. Validation is the pydantic models', persistence the store's, Ray the scheduler's.
Every error is a 4xx with a message naming what was wrong.
"""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, Header, HTTPException, Query, Request, Response
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, PlainTextResponse, StreamingResponse
from pydantic import BaseModel

from raykd.service import ownership, rules, streams
from raykd.service.artifacts import listed
from raykd.service.deps import JOB_ID_HELP, Audit, CurrentUser, OwnedJob, State
from raykd.service.job_views import page, public
from raykd.service.schemas import (
    ERROR_RESPONSES,
    Artifact,
    JobCreate,
    JobPage,
    JobPatch,
    JobPublic,
    MetricPoint,
)
from raykd.service.state import ServiceState
from raykd.service.store import read
from raykd.service.streams import MAX_SEQ

router = APIRouter(prefix="/api/v1/jobs", tags=["jobs"], responses=ERROR_RESPONSES)


def answer(model: BaseModel, status_code: int = 200) -> Response:
    """``model`` as the JSON FastAPI would send for it, serialized once (pydantic's
    serializer): a route that returns this skips FastAPI's second validation of its result."""
    return Response(model.model_dump_json().encode(), status_code=status_code,
                    media_type="application/json")


def _state(request: Request) -> ServiceState:
    """The service's state, read directly (not the State dependency: one fewer to solve)."""
    state: ServiceState = request.app.state.raykd
    return state


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
    job, made = await rules.submit(_state(request), user, body, idempotency_key, audit)
    return answer(job, status_code=201 if made else 200)  # serialized once (no 2nd validation)


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
    # async, reading SQLite on the loop (store.read): no thread hop; serialized once
    labels = rules.label_filters(label or [])
    state = _state(request)
    try:
        found = await read(state.store, page, state, owner=ownership.listed_owner(user),
                           state=status, name=name, labels=labels, limit=limit, cursor=cursor,
                           ascending=order == "asc")
    except ValueError as err:
        raise HTTPException(400, str(err)) from None
    return answer(found)


@router.get("/{job_id}", response_model=JobPublic, summary="One job: status, stage, progress, result")
async def get_job(job_id: Annotated[str, PathParam(description=JOB_ID_HELP)], user: CurrentUser,
                  request: Request) -> Response:
    # async, one read of the row, its labels and queue position on one connection (SQLite:
    # on the loop, store.read), serialized once: no thread hops, no ORM, no second validation
    return answer(await ownership.visible_view(_state(request).store, user, job_id))


@router.patch("/{job_id}", response_model=JobPublic, summary="Re-prioritise a queued job")
def patch_job(body: JobPatch, row: OwnedJob, state: State, user: CurrentUser, audit: Audit) -> JobPublic:
    return public(state, rules.reprioritise(state, user, row, body.priority, audit), full=True)


@router.post("/{job_id}/cancel", response_model=JobPublic, summary="Cancel a queued or running job")
def cancel(row: OwnedJob, state: State, audit: Audit) -> JobPublic:
    """A queued job is cancelled at once; a running one is stopped (Ray sends SIGTERM).

    While Ray is unreachable the cancel is recorded and answered 503: the scheduler stops
    the job when Ray is back, and the job ends ``cancelled``.
    """
    return public(state, rules.cancel(state, row, audit), full=True)


@router.post("/{job_id}/retry", response_model=JobPublic, summary="Run a final job again (resumes)")
def retry(row: OwnedJob, state: State, audit: Audit) -> JobPublic:
    return public(state, rules.retry(state, row, audit), full=True)


@router.delete("/{job_id}", status_code=204, summary="Delete a final job, its files and events")
def delete(row: OwnedJob, state: State, audit: Audit) -> Response:
    """Delete the job, its files, and Ray's records of its submissions (so its id can be reused)."""
    rules.delete(state, row, audit)
    return Response(status_code=204)


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
    start = after if after is not None else streams.event_seq(last_event_id)
    return StreamingResponse(streams.sse(state, row.id, start, request),
                             media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


@router.get("/{job_id}/logs", response_class=PlainTextResponse, summary="The driver's log")
async def logs(row: OwnedJob, state: State,
               offset: Annotated[int, Query(ge=0, description="Start at this byte of the log (UTF-8): "
                                            "the number of bytes already read, to resume.")] = 0,
               tail: Annotated[int | None, Query(ge=1, le=100_000,
                                                 description="Only the last N lines.")] = None,
               follow: Annotated[bool, Query(description="Keep the response open and stream new "
                                             "output until the job ends.")] = False) -> Response:
    if not follow:
        return Response(await streams.log_bytes(state, row, offset, tail),
                        media_type="text/plain; charset=utf-8")
    return StreamingResponse(streams.followed_log(state, row, offset),
                             media_type="text/plain; charset=utf-8")


@router.get("/{job_id}/artifacts", response_model=list[Artifact], summary="Files to download")
def artifacts(row: OwnedJob, state: State) -> list[Artifact]:
    found = listed(state.settings, row.id)
    return [Artifact(path=rel, size=p.lstat().st_size) for rel, p in found]


@router.get("/{job_id}/artifacts/{path:path}", summary="Download one artifact",
            response_class=FileResponse)
def download(path: Annotated[str, PathParam(
                 description="The file's path in the job's directory, as GET .../artifacts lists "
                 "it (e.g. result.json).")],
             row: OwnedJob, state: State, audit: Audit) -> FileResponse:
    return rules.download(state, row, path, audit)
