"""``/healthz`` (process up, no auth, touches nothing) and ``/readyz`` (database and Ray answer).

Both are ``async``: they never wait for a worker thread, so they answer while the API's
threads are busy; ``/readyz`` asks Ray with a deadline of its own and answers 503 in ~1.5 s
when Ray does not answer.
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from raykd.service.deps import CurrentUser, State

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="The process is up (no authentication)")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", summary="The database and Ray answer")
async def readyz(state: State, _user: CurrentUser) -> JSONResponse:
    """503 when either does not answer; Ray gets at most ~1.5 s (its ping's own deadline)."""
    database, ray = await asyncio.gather(asyncio.to_thread(_safe, state.store.ping),
                                         asyncio.to_thread(_safe, state.ray.ping))
    checks = {"database": database, "ray": ray}
    return JSONResponse(checks, status_code=200 if all(checks.values()) else 503)


def _safe(check: object) -> bool:
    try:
        return bool(check())  # type: ignore[operator]
    except Exception:  # noqa: BLE001 - not ready, whatever the reason
        return False
