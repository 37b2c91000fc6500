"""``/api/v1/audit``: the audit log, for the admin alone (see :mod:`raykd.service.audit`)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query
from pydantic import BaseModel, Field

from raykd.service.audit import ACTIONS, entries
from raykd.service.deps import CurrentUser, State
from raykd.service.schemas import ERROR_RESPONSES

router = APIRouter(prefix="/api/v1/audit", tags=["audit"], responses=ERROR_RESPONSES)


class AuditEntry(BaseModel):
    """One audited action."""

    id: int = Field(description="Increasing with time; pages go by it.")
    time: float = Field(description="When (Unix seconds).")
    actor: str = Field(description="Who: a user's name, `admin`, or `service` (retention).")
    action: str = Field(description=f"What: one of {', '.join(ACTIONS)}.")
    job_id: str | None = Field(default=None, description="The job acted on (none for a login).")
    client: str | None = Field(default=None, description="The caller's address.")
    detail: dict[str, Any] | None = Field(default=None, description="More about it (e.g. the artifact).")


class AuditPage(BaseModel):
    """One page of the audit log, newest first; pass ``next_cursor`` as ``cursor`` for the next."""

    items: list[AuditEntry] = Field(description="The entries of this page.")
    next_cursor: str | None = Field(default=None, description="Cursor of the next page; None at the end.")


@router.get("", response_model=AuditPage, summary="The audit log (admin only), newest first")
def audit_log(user: CurrentUser, state: State,
              actor: Annotated[str | None, Query(max_length=64, description="Only this user's actions.")] = None,
              action: Annotated[str | None, Query(
                  max_length=32, description=f"Only this action: {', '.join(ACTIONS)}.")] = None,
              job_id: Annotated[str | None, Query(max_length=128, description="Only this job's.")] = None,
              limit: Annotated[int, Query(ge=1, le=500, description="Entries per page, 1-500.")] = 100,
              cursor: Annotated[str | None, Query(
                  max_length=20, description="Where the page starts: the previous page's next_cursor.")] = None,
              ) -> AuditPage:
    if not user.admin:
        raise HTTPException(403, "the audit log is for the admin (RAYKD_TOKEN) only")
    if action is not None and action not in ACTIONS:
        raise HTTPException(422, f"action {action[:32]!r} is not one of {', '.join(ACTIONS)}")
    if cursor is not None and not (cursor.isascii() and cursor.isdigit() and 0 < len(cursor) <= 18):
        raise HTTPException(400, f"cursor {cursor[:20]!r} is not a cursor this service gave out")
    rows = entries(state.store, actor=actor, action=action, job_id=job_id, limit=limit + 1,
                   before=int(cursor) if cursor else None)
    page = [AuditEntry(id=r.id, time=r.time, actor=r.actor, action=r.action, job_id=r.job_id,
                       client=r.client, detail=r.detail) for r in rows[:limit]]
    more = len(rows) > limit and page
    return AuditPage(items=page, next_cursor=str(page[-1].id) if more else None)
