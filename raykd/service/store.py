"""Persistence: jobs, their labels and their event history, in SQLAlchemy 2 (SQLite by default).

The schema is created and upgraded by Alembic (``raykd/service/migrations``, through
:func:`raykd.service.database.migrate`) when the service starts. Everything a user sees
survives a restart of the service and of the Ray head: the job record, its spec, its final
result and every event it wrote.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import defer
from starlette.concurrency import run_in_threadpool

from raykd.service.database import Database
from raykd.service.statements import (
    AHEAD_READ,
    JOB_FIELDS,
    JOB_READ,
    LABELS_MANY_READ,
    LABELS_READ,
    POSITIONS_READ,
    QUEUE_ORDER,
    JobSummary,
    decode_cursor,
    encode_cursor,
    inserting,
    json_loaders,
    page_read,
)
from raykd.service.tables import Base, EventRow, JobRow, LabelRow, LeaseRow


def _set_fields(obj: Base) -> dict[str, Any]:
    """The column values set on a new ORM object (unset ones: the column's default)."""
    return {c.key: obj.__dict__[c.key] for c in obj.__table__.columns if c.key in obj.__dict__}


class Store(Database):
    """Jobs, labels, events and leases, on the service's :class:`Database`."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.json_loaders = json_loaders(self.engine.dialect)

    def add(self, row: JobRow, labels: dict[str, str], *also: Base) -> JobRow:
        """Store the job, its labels and ``also`` (e.g. its audit entry) in one transaction:
        plain INSERTs (the ORM's unit of work cost ~1.5 ms of CPU per job, profiled); the
        columns ``row`` leaves unset get their defaults, in the database and on ``row``.
        Blocking (SQLite's lock may be another process's): call it from a thread."""
        turn = self._turn(True)
        assert turn is not None
        dialect = self.engine.dialect
        with turn:
            dbapi = self._reader()
            try:
                inserting(JobRow).run(dbapi, dialect, [_set_fields(row)])
                if labels:
                    inserting(LabelRow).run(dbapi, dialect, [
                        {"job_id": row.id, "key": k, "value": v} for k, v in labels.items()])
                for other in also:
                    inserting(type(other)).run(dbapi, dialect, [_set_fields(other)])
                dbapi.commit()
            except BaseException:
                dbapi.rollback()
                raise
            finally:
                self._done(dbapi)
        for column in JobRow.__table__.columns:
            if column.key not in row.__dict__ and column.default is not None \
                    and column.default.is_scalar:
                setattr(row, column.key, column.default.arg)
        return row

    def get(self, job_id: str) -> JobRow | None:
        with self.sessions() as s:
            return s.get(JobRow, job_id)

    def by_key(self, owner: str, key: str) -> JobRow | None:
        with self.sessions() as s:
            return s.scalars(select(JobRow).where(JobRow.owner == owner,
                                                  JobRow.idempotency_key == key)).first()

    def labels(self, job_ids: list[str]) -> dict[str, dict[str, str]]:
        out: dict[str, dict[str, str]] = {i: {} for i in job_ids}
        if job_ids:
            for job_id, key, value in self._read(LABELS_MANY_READ, ids=list(job_ids)):
                out[job_id][key] = value
        return out

    def view(self, job_id: str) -> dict[str, Any] | None:
        """The job as the API shows it (its columns, spec, result, labels and queue
        position), read on one pooled connection by precompiled SQL; None when there is none."""
        dialect = self.engine.dialect
        dbapi = self._reader()
        try:
            found = JOB_READ.rows(dbapi, dialect, id=job_id)
            if not found:
                return None
            out = dict(zip(JOB_FIELDS, found[0], strict=True))
            out["labels"] = dict(LABELS_READ.rows(dbapi, dialect, id=job_id))
            out["queue_position"] = None
            if out["state"] == "queued":
                ahead = AHEAD_READ.rows(dbapi, dialect, priority=out["priority"],
                                         created_at=out["created_at"], id=job_id)
                out["queue_position"] = int(ahead[0][0]) + 1
        finally:
            self._done(dbapi)
        for key, load in self.json_loaders.items():
            if load is not None:
                out[key] = load(out[key])
        return out

    def update(self, job_id: str, **fields: Any) -> JobRow | None:
        with self.session() as s:
            row = s.get(JobRow, job_id)
            if row is None:
                return None
            for k, v in fields.items():
                setattr(row, k, v)
        return row

    def delete(self, job_id: str) -> None:
        with self.session() as s:
            row = s.get(JobRow, job_id)
            if row is not None:
                s.query(EventRow).filter(EventRow.job_id == job_id).delete()
                s.query(LabelRow).filter(LabelRow.job_id == job_id).delete()
                s.delete(row)

    def page(self, *, owner: str | None, state: str | None, name: str | None,
             labels: dict[str, str], limit: int, cursor: str | None,
             ascending: bool) -> tuple[list[Any], str | None]:
        """One page of jobs ordered by (created_at, id): :class:`JobSummary` rows (a list
        never shows spec or result: not read); the next page's cursor."""
        values: dict[str, Any] = {"limit": limit + 1}
        for key, value in (("owner", owner), ("state", state), ("name", name)):
            if value is not None:
                values[key] = value
        for i, (k, v) in enumerate(labels.items()):
            values[f"key{i}"], values[f"value{i}"] = k, v
        if cursor:
            values["after_created"], values["after_id"] = decode_cursor(cursor)
        read = page_read(owner is not None, state is not None, name is not None, len(labels),
                          bool(cursor), ascending)
        load = self.json_loaders["latest_metrics"] or (lambda x: x)
        metrics = JobSummary._fields.index("latest_metrics")
        rows = [JobSummary(*r[:metrics], load(r[metrics]), *r[metrics + 1:])
                for r in self._read(read, **values)]
        more = len(rows) > limit
        rows = rows[:limit]
        return rows, (encode_cursor(rows[-1].created_at, rows[-1].id) if more and rows else None)

    def in_states(self, *states: str) -> list[JobRow]:
        with self.sessions() as s:
            return list(s.scalars(select(JobRow).where(JobRow.state.in_(states))))

    def queue(self) -> list[JobRow]:
        """Queued jobs in start order: priority (high first), then submission time."""
        with self.sessions() as s:
            return list(s.scalars(select(JobRow).where(JobRow.state == "queued")
                                  .order_by(*QUEUE_ORDER)))

    def queue_positions(self, job_ids: list[str]) -> dict[str, int]:
        """The 1-based queue position of each of ``job_ids`` that is queued: one query, the
        numbering done by the database (a window function), not by reading the queue out."""
        if not job_ids:
            return {}
        return {job_id: int(pos) for job_id, pos in self._read(POSITIONS_READ, ids=list(job_ids))}

    def queue_position(self, row: Any) -> int | None:
        """The 1-based queue position of ``row`` (None unless it is queued)."""
        if row.state != "queued":
            return None
        ahead = self._read(AHEAD_READ, priority=row.priority, created_at=row.created_at,
                           id=row.id)
        return int(ahead[0][0]) + 1

    def add_events(self, job_id: str, events: list[Any]) -> None:
        """Store events (idempotent: a seq already stored is skipped)."""
        if not events:
            return
        with self.session() as s:
            # a range, not an IN list: 50,000 new events are one query
            seqs = [e.seq for e in events]
            have = set(s.scalars(select(EventRow.seq).where(EventRow.job_id == job_id,
                                                            EventRow.seq >= min(seqs),
                                                            EventRow.seq <= max(seqs))))
            s.add_all(EventRow(job_id=job_id, seq=e.seq, type=e.type, body=e.model_dump_json())
                      for e in events if e.seq not in have)

    def events(self, job_id: str, *, after: int = 0,
               types: tuple[str, ...] = ()) -> list[tuple[int, str, str]]:
        """(seq, type, json) of a job's stored events after ``after``, in order."""
        q = select(EventRow.seq, EventRow.type, EventRow.body).where(EventRow.job_id == job_id,
                                                                     EventRow.seq > after)
        if types:
            q = q.where(EventRow.type.in_(types))
        with self.sessions() as s:
            return [(r[0], r[1], r[2]) for r in s.execute(q.order_by(EventRow.seq))]

    def failed_since(self, since: float) -> list[JobRow]:
        """Jobs recorded ``failed`` at or after ``since`` (the follower watches them for late
        events)."""
        with self.sessions() as s:
            return list(s.scalars(select(JobRow).options(defer(JobRow.spec), defer(JobRow.result))
                                  .where(JobRow.state == "failed", JobRow.finished_at >= since)))

    def take_lease(self, name: str, holder: str, ttl_s: float, *,
                   steal_from: str | None = None) -> bool:
        """Take or renew the lease ``name`` for ``holder`` until now + ``ttl_s``; False if
        another holds it.

        Atomic on SQLite and PostgreSQL alike: one conditional UPDATE (ours, expired, or the
        dead ``steal_from``), else one INSERT that fails when a row exists.
        """
        now = time.time()
        mine = [LeaseRow.holder == holder, LeaseRow.expires_at < now]
        if steal_from is not None:
            mine.append(LeaseRow.holder == steal_from)
        with self.session() as s:
            done = s.execute(update(LeaseRow).where(LeaseRow.name == name, or_(*mine))
                             .values(holder=holder, expires_at=now + ttl_s))
            if done.rowcount == 1:  # type: ignore[attr-defined]
                return True
        try:
            with self.session() as s:
                s.add(LeaseRow(name=name, holder=holder, expires_at=now + ttl_s))
            return True
        except IntegrityError:
            return False

    def lease(self, name: str) -> LeaseRow | None:
        with self.sessions() as s:
            return s.get(LeaseRow, name)

    def release_lease(self, name: str, holder: str) -> None:
        """Give the lease up now (only if ``holder`` has it)."""
        with self.session() as s:
            s.execute(update(LeaseRow).where(LeaseRow.name == name, LeaseRow.holder == holder)
                      .values(expires_at=0.0))


T = TypeVar("T")


async def read(store: Store, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)``, a short read of ``store``: on the event loop for SQLite (a
    file on this host: a read by key takes tens of microseconds, and in WAL mode a reader
    never waits for a writer), where a hop to a worker thread and back costs more than the
    read; in the thread pool for a database server (a network round trip)."""
    if store.local:
        return fn(*args, **kwargs)
    return await run_in_threadpool(fn, *args, **kwargs)
