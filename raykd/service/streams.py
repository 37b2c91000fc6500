"""A job followed over HTTP: its events as Server-Sent Events (resumable by seq) and its
driver's log (from a byte offset, or streamed until the job ends)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

from fastapi import HTTPException, Request

from raykd.core.states import FINAL_STATES, TERMINAL_EVENTS
from raykd.service.ray_jobs import RayUnavailable
from raykd.service.state import ServiceState
from raykd.service.tables import JobRow

MAX_SEQ = 2**62  # an event seq (and `after`) fits a 64-bit database integer
KEEPALIVE_S = 15.0
LOG_POLL_S = 1.0


def event_seq(value: str | None) -> int:
    """The seq in a ``Last-Event-ID`` header; 400 unless a whole number 0..MAX_SEQ."""
    text = (value or "0").strip()
    if not (text.isascii() and text.isdigit()) or len(text) > 19 or int(text) > MAX_SEQ:
        raise HTTPException(400, f"Last-Event-ID {text[:40]!r} is not an event seq (a whole "
                                 f"number from 0 to {MAX_SEQ})")
    return int(text)


async def sse(state: ServiceState, job_id: str, seen: int,
              request: Request) -> AsyncIterator[bytes]:
    """Stored events after ``seen``, then new ones as the follower stores them."""
    quiet = time.monotonic()
    while True:
        rows = await asyncio.to_thread(state.store.events, job_id, after=seen)
        for seq, kind, body in rows:
            seen = seq
            yield f"id: {seq}\nevent: {kind}\ndata: {body}\n\n".encode()
            quiet = time.monotonic()
        row = await asyncio.to_thread(state.store.get, job_id)
        if row is None or (row.state in FINAL_STATES
                           and (not rows or rows[-1][1] in TERMINAL_EVENTS)):
            if row is None or await asyncio.to_thread(_caught_up, state, job_id, seen):
                return
        if await request.is_disconnected():
            return
        if time.monotonic() - quiet > KEEPALIVE_S:
            yield b": keepalive\n\n"
            quiet = time.monotonic()
        await asyncio.sleep(state.settings.poll_s / 2)


def _caught_up(state: ServiceState, job_id: str, seen: int) -> bool:
    return not state.store.events(job_id, after=seen)


async def log_bytes(state: ServiceState, row: JobRow, offset: int, tail: int | None) -> bytes:
    """The driver log now (see :func:`_log_bytes`); 503 while Ray is away. In a thread: the
    Ray SDK blocks, up to its timeout while Ray is away."""
    try:
        return await asyncio.to_thread(_log_bytes, state, row, offset, tail)
    except RayUnavailable as err:
        raise HTTPException(503, str(err)) from None


async def followed_log(state: ServiceState, row: JobRow, offset: int) -> AsyncIterator[bytes]:
    """The driver log from byte ``offset`` until the job ends: Ray's stream, then what is
    left, polled (a retry meanwhile: the new attempt's log from its start)."""
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
        await asyncio.sleep(LOG_POLL_S)
        current = await asyncio.to_thread(state.store.get, row.id)


async def _tailed(state: ServiceState, row: JobRow, offset: int) -> AsyncIterator[bytes]:
    """The driver log from byte ``offset`` as Ray streams it, until the job ends (see
    RayJobs.tail)."""
    current: JobRow | None = row
    while (current is not None and current.submission_id is None
           and current.state not in FINAL_STATES):
        await asyncio.sleep(LOG_POLL_S)  # not submitted yet
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


def _log_bytes(state: ServiceState, row: JobRow, offset: int, tail: int | None) -> bytes:
    """The driver log as UTF-8 from byte ``offset`` (or its last ``tail`` lines)."""
    text = state.ray.logs(row.submission_id) if row.submission_id else ""
    if tail is not None:
        return ("\n".join(text.splitlines()[-tail:]) + ("\n" if text else "")).encode()
    return text.encode()[offset:]
