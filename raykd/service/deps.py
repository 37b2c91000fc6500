"""Request dependencies: the service state and the caller (bearer token, constant-time).

The dashboard's pages call the same API from the browser with a session cookie instead
(``EventSource`` cannot send headers): a request without an ``Authorization`` header is
taken to be the cookie's user; one that changes state (POST, PUT, PATCH, DELETE) must
then also carry the session's CSRF value in ``X-Raykd-CSRF``. A bearer token needs none.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Path, Request

from raykd.service.audit import Auditor
from raykd.service.auth import (
    User,
    auth_limit,
    client_address,
    refuse_if_limited,
    secret_matches,
    user_for_token,
)
from raykd.service.ownership import visible_job
from raykd.service.settings import Settings
from raykd.service.state import ServiceState
from raykd.service.tables import JobRow
from raykd.service.web.sessions import CSRF_HEADER, request_session

UNSAFE_METHODS = ("POST", "PUT", "PATCH", "DELETE")


async def get_state(request: Request) -> ServiceState:  # async: no I/O, no thread-pool hop
    """The service's state (built by the app's lifespan)."""
    state: ServiceState = request.app.state.raykd
    return state


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
            if request.method in UNSAFE_METHODS and not secret_matches(
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


JOB_ID_HELP = ("The job's id: the `id` a submission returned (also its directory and its Ray "
               "submission_id).")

CurrentUser = Annotated[User, Depends(current_user)]
State = Annotated[ServiceState, Depends(get_state)]


def owned_job(job_id: Annotated[str, Path(description=JOB_ID_HELP)], user: CurrentUser,
              state: State) -> JobRow:
    """The job ``job_id`` if the caller may see it: 404 when unknown or someone else's
    (the same answer, so ids of other users' jobs cannot be probed; see ownership.visible_job)."""
    return visible_job(state.store, user, job_id)


async def auditor(request: Request, user: CurrentUser, state: State) -> Auditor:
    """The request's :class:`Auditor` (the caller is the route's own, resolved once; async:
    no I/O here, so no hop to a worker thread)."""
    return Auditor(state.store, user, client_address(request))


OwnedJob = Annotated[JobRow, Depends(owned_job)]
Audit = Annotated[Auditor, Depends(auditor)]
