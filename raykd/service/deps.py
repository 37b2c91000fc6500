"""Request dependencies: the service state and the caller (bearer token, constant-time).

The dashboard's pages call the same API from the browser with a session cookie instead
(``EventSource`` cannot send headers): a request without an ``Authorization`` header is
taken to be the cookie's user; one that changes state (POST, PUT, PATCH, DELETE) must
then also carry the session's CSRF value in ``X-Raykd-CSRF``. A bearer token needs none.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

from fastapi import Depends, HTTPException, Path, Request
from starlette.concurrency import run_in_threadpool

from raykd.service.ratelimit import FailureLimit
from raykd.service.settings import Settings
from raykd.service.store import JobRow, Store
from raykd.service.web.sessions import CSRF_HEADER, request_session

UNSAFE_METHODS = ("POST", "PUT", "PATCH", "DELETE")
T = TypeVar("T")


@dataclass(frozen=True)
class User:
    """Who is calling: a named user sees only their own jobs; the admin sees all."""

    name: str
    admin: bool


async def get_state(request: Request) -> Any:  # async: no I/O, no thread-pool hop
    return request.app.state.raykd


def _match(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


def user_for_token(settings: Settings, token: str) -> User | None:
    """The user whose token ``token`` is (constant-time, every token compared), or None."""
    found: User | None = None
    if not token:
        return None  # never matches (settings refuse empty tokens, but be sure)
    if settings.token is not None and _match(token, settings.token.get_secret_value()):
        found = User("admin", admin=True)
    for name, secret in settings.users.items():  # check all: timing does not depend on which
        if _match(token, secret.get_secret_value()):
            found = found or User(name, admin=False)
    return found


async def current_user(request: Request) -> User:  # async: pure CPU, no thread-pool hop
    """The user of the bearer token; 401 without one, 401 for a wrong one (never logged).

    Without an ``Authorization`` header, a live session cookie of the dashboard stands in
    for the token; state-changing methods then need the session's ``X-Raykd-CSRF`` (403).
    """
    settings: Settings = request.app.state.raykd.settings
    header = request.headers.get("authorization", "")
    if not header:
        _, session = request_session(request)
        if session is not None:
            if request.method in UNSAFE_METHODS and not _match(
                    request.headers.get(CSRF_HEADER, ""), session.csrf):
                raise HTTPException(403, f"missing or wrong {CSRF_HEADER} header: a request that "
                                         "changes state with the session cookie needs the page's "
                                         "CSRF value")
            return session.user
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise HTTPException(401, "missing bearer token: send 'Authorization: Bearer <RAYKD_TOKEN>'",
                            headers={"WWW-Authenticate": "Bearer"})
    address = client_address(request)
    refuse_if_limited(request, address)
    found = user_for_token(settings, token)
    if found is None:
        auth_limit(request).failed(address)
        raise HTTPException(401, "invalid token", headers={"WWW-Authenticate": "Bearer"})
    return found


def client_address(request: Request) -> str:
    """The caller's address (the proxy's, behind one whose forwarded headers uvicorn does not trust)."""
    return request.client.host if request.client else "unknown"


def auth_limit(request: Request) -> FailureLimit:
    """The app's limit on failed authentication (made on first use, per app)."""
    found: FailureLimit | None = getattr(request.app.state, "raykd_auth_limit", None)
    if found is None:
        settings: Settings = request.app.state.raykd.settings
        found = request.app.state.raykd_auth_limit = FailureLimit(settings.auth_failures_per_minute)
    return found


def refuse_if_limited(request: Request, address: str) -> None:
    """429 with Retry-After while ``address`` has failed too often to authenticate."""
    wait = auth_limit(request).retry_after(address)
    if wait is not None:
        raise HTTPException(429, f"too many failed logins or wrong tokens from {address}: try again "
                                 f"in {wait} s (RAYKD_AUTH_FAILURES_PER_MINUTE)",
                            headers={"Retry-After": str(wait)})


JOB_ID_HELP = ("The job's id: the `id` a submission returned (also its directory and its Ray "
               "submission_id).")

CurrentUser = Annotated[User, Depends(current_user)]
State = Annotated[Any, Depends(get_state)]


def owned_job(job_id: Annotated[str, Path(description=JOB_ID_HELP)], user: CurrentUser,
              state: State) -> JobRow:
    """The job ``job_id`` if the caller may see it: 404 when unknown or someone else's
    (the same answer, so ids of other users' jobs cannot be probed)."""
    return visible_job(state.store, user, job_id)


def visible_job(store: Store, user: User, job_id: str) -> JobRow:
    """The stored job ``job_id`` if ``user`` may see it, else 404 (unknown or another's alike)."""
    row = store.get(job_id) if len(job_id) <= 160 else None
    if row is None or (not user.admin and row.owner != user.name):
        raise no_job(job_id)
    return row


def no_job(job_id: str) -> HTTPException:
    """The one answer for a job that is unknown or another user's."""
    return HTTPException(404, f"no job {job_id[:160]!r}")


async def read(store: Store, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)``, a short read of ``store``: on the event loop for SQLite (a
    file on this host: a read by key takes tens of microseconds, and in WAL mode a reader
    never waits for a writer), where a hop to a worker thread and back costs more than the
    read; in the thread pool for a database server (a network round trip)."""
    if store.local:
        return fn(*args, **kwargs)
    return await run_in_threadpool(fn, *args, **kwargs)


OwnedJob = Annotated[JobRow, Depends(owned_job)]
