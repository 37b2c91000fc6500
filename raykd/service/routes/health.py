"""``/healthz`` (process up, no auth) and ``/readyz`` (database and Ray reachable)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from raykd.service.deps import CurrentUser, State

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="The process is up (no authentication)")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", summary="The database and Ray answer")
def readyz(state: State, _user: CurrentUser) -> JSONResponse:
    checks = {"database": _safe(state.store.ping), "ray": _safe(state.ray.ping)}
    return JSONResponse(checks, status_code=200 if all(checks.values()) else 503)


def _safe(check: object) -> bool:
    try:
        return bool(check())  # type: ignore[operator]
    except Exception:  # noqa: BLE001 - not ready, whatever the reason
        return False
