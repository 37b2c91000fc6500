"""Who may see a job, in one place: its owner, or the admin; anyone else gets the answer an
unknown job gets (404), so ids of other users' jobs cannot be probed.

The REST routes (:mod:`raykd.service.routes.jobs`, through :func:`raykd.service.deps.owned_job`)
and the dashboard (:mod:`raykd.service.web.routes`) look a job up here before a rule of
:mod:`raykd.service.rules` acts on it, and list jobs with :func:`listed_owner`.
"""

from __future__ import annotations

from fastapi import HTTPException

from raykd.service.auth import User
from raykd.service.schemas import JobPublic
from raykd.service.store import Store, read
from raykd.service.tables import JobRow

MAX_JOB_ID = 160  # longer is never a stored id: answered 404 without a query


def may_see(user: User, owner: str) -> bool:
    """Whether ``user`` may see (and act on) a job of ``owner``: its owner, or the admin."""
    return user.admin or owner == user.name


def listed_owner(user: User) -> str | None:
    """The owner filter of ``user``'s job lists (the API's and the dashboard's): their own
    jobs, or every job (None) for the admin; the same rule as :func:`may_see`."""
    return None if user.admin else user.name


def visible_job(store: Store, user: User, job_id: str) -> JobRow:
    """The stored job ``job_id`` if ``user`` may see it, else 404 (unknown or another's alike,
    so ids of other users' jobs cannot be probed)."""
    row = store.get(job_id) if len(job_id) <= MAX_JOB_ID else None
    if row is None or not may_see(user, row.owner):
        raise no_job(job_id)
    return row


def no_job(job_id: str) -> HTTPException:
    """The one answer for a job that is unknown or another user's."""
    return HTTPException(404, f"no job {job_id[:MAX_JOB_ID]!r}")


async def visible_view(store: Store, user: User, job_id: str) -> JobPublic:
    """The API view of ``job_id`` (one read: row, labels, queue position) if ``user`` may see
    it, else 404 as :func:`visible_job`."""
    view = await read(store, store.view, job_id) if len(job_id) <= MAX_JOB_ID else None
    if view is None or not may_see(user, view["owner"]):
        raise no_job(job_id)
    return JobPublic.model_validate(view)
