"""The audit log: who did what to which job, when, and from where.

Every action that changes a job or reads its files is one :class:`AuditRow` in the
service's database: ``submit``, ``cancel``, ``retry``, ``delete``, ``priority``,
``download``, ``login`` (the dashboard's) and ``retention`` (a job the service deleted as
older than ``RAYKD_RETENTION_DAYS``). ``actor`` is the user's name (``admin`` for the
``RAYKD_TOKEN`` holder, ``service`` for the service itself), ``client`` the caller's
address (behind a reverse proxy: the forwarded client, when uvicorn trusts the proxy).
Only the admin reads it: ``GET /api/v1/audit``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from raykd.service.auth import User
from raykd.service.store import Store
from raykd.service.tables import AuditRow

ACTIONS = ("submit", "cancel", "retry", "delete", "priority", "download", "login", "retention")


def entry(actor: str, action: str, job_id: str | None = None, client: str | None = None,
          detail: dict[str, Any] | None = None) -> AuditRow:
    """One entry, not yet stored (``action`` is one of :data:`ACTIONS`)."""
    if action not in ACTIONS:
        raise ValueError(f"audit action {action!r} is not one of {', '.join(ACTIONS)}")
    return AuditRow(time=time.time(), actor=actor[:64], action=action,
                    job_id=job_id[:128] if job_id else None,
                    client=client[:128] if client else None, detail=detail or None)


def record(store: Store, actor: str, action: str, job_id: str | None = None,
           client: str | None = None, detail: dict[str, Any] | None = None) -> None:
    """Append one entry (``action`` is one of :data:`ACTIONS`)."""
    with store.session() as s:
        s.add(entry(actor, action, job_id, client, detail))


def entries(store: Store, *, actor: str | None, action: str | None, job_id: str | None,
            limit: int, before: int | None) -> list[AuditRow]:
    """Up to ``limit`` entries, newest first, with an id below ``before`` when given."""
    q = select(AuditRow)
    for column, value in ((AuditRow.actor, actor), (AuditRow.action, action), (AuditRow.job_id, job_id)):
        if value is not None:
            q = q.where(column == value)
    if before is not None:
        q = q.where(AuditRow.id < before)
    with store.sessions() as s:
        return list(s.scalars(q.order_by(AuditRow.id.desc()).limit(limit)))


@dataclass(frozen=True)
class Auditor:
    """Records actions of one request's caller: ``audit("cancel", job_id)``."""

    store: Store
    user: User
    client: str | None

    def __call__(self, action: str, job_id: str | None = None, **detail: Any) -> None:
        record(self.store, self.user.name, action, job_id, self.client, detail)

    def entry(self, action: str, job_id: str | None = None, **detail: Any) -> AuditRow:
        """The entry ``self(action, job_id, ...)`` would append, to store with other rows."""
        return entry(self.user.name, action, job_id, self.client, detail)
