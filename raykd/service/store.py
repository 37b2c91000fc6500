"""Persistence: jobs, their labels and their event history, in SQLAlchemy 2 (SQLite by default).

The schema is created and upgraded by Alembic (``raykd/service/migrations``) when the
service starts. Everything a user sees survives a restart of the service and of the Ray
head: the job record, its spec, its final result and every event it wrote.
"""

from __future__ import annotations

import base64
import json
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
    and_,
    create_engine,
    event,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, defer, mapped_column, sessionmaker

POOL_SIZE = 40  # >= the API's worker threads (RAYKD_THREADS, default 8) plus the scheduler


class Base(DeclarativeBase):
    pass


class JobRow(Base):
    """One submitted job."""

    __tablename__ = "jobs"
    __table_args__ = (UniqueConstraint("owner", "idempotency_key", name="uq_owner_idempotency"),)

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), index=True)
    kind: Mapped[str] = mapped_column(String(8))
    owner: Mapped[str] = mapped_column(String(64), index=True)
    state: Mapped[str] = mapped_column(String(16), index=True)
    priority: Mapped[int] = mapped_column(Integer, default=0)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    idempotency_key: Mapped[str | None] = mapped_column(String(128), nullable=True)
    created_at: Mapped[float] = mapped_column(Float, index=True)
    started_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    finished_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    note: Mapped[str | None] = mapped_column(Text, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    submission_id: Mapped[str | None] = mapped_column(String(160), nullable=True)
    stage: Mapped[str | None] = mapped_column(String(64), nullable=True)
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    latest_metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    last_seq: Mapped[int] = mapped_column(Integer, default=0)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    request_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    events_offset: Mapped[int] = mapped_column(BigInteger, default=0)  # bytes of events.jsonl ingested
    max_run_s: Mapped[float | None] = mapped_column(Float, nullable=True)  # the job's deadline
    log_offset: Mapped[int] = mapped_column(BigInteger, default=0)


class LabelRow(Base):
    """One label of a job (a table of its own, so filters are indexed queries)."""

    __tablename__ = "job_labels"

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(String(64), index=True)


class EventRow(Base):
    """One event of a job, as written to its ``events.jsonl``."""

    __tablename__ = "job_events"

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    type: Mapped[str] = mapped_column(String(32))
    body: Mapped[str] = mapped_column(Text)


class AuditRow(Base):
    """One audited action: who did what to which job, when and from where."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    time: Mapped[float] = mapped_column(Float, index=True)
    actor: Mapped[str] = mapped_column(String(64), index=True)
    action: Mapped[str] = mapped_column(String(32), index=True)
    job_id: Mapped[str | None] = mapped_column(String(128), nullable=True, index=True)
    client: Mapped[str | None] = mapped_column(String(128), nullable=True)
    detail: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)


class LeaseRow(Base):
    """A named lease (``scheduler``): one holder at a time, renewed before ``expires_at``."""

    __tablename__ = "service_lease"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    holder: Mapped[str] = mapped_column(String(128))
    expires_at: Mapped[float] = mapped_column(Float)


def make_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite gets WAL, a busy timeout and foreign keys."""
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        # a pool as large as the server's thread pool: connections beyond the pool would be
        # opened (and their pragmas run) per request, then thrown away
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30},
                               pool_size=POOL_SIZE, max_overflow=POOL_SIZE)

        @event.listens_for(engine, "connect")
        def _pragmas(conn: Any, _record: Any) -> None:
            cur = conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        return engine
    return create_engine(url, pool_pre_ping=True)


def migrate(url: str) -> None:
    """Create or upgrade the schema to the newest Alembic revision."""
    from alembic import command
    from alembic.config import Config

    here = Path(__file__).parent / "migrations"
    cfg = Config()
    cfg.set_main_option("script_location", str(here))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    command.upgrade(cfg, "head")


def encode_cursor(created_at: float, job_id: str) -> str:
    return base64.urlsafe_b64encode(json.dumps([created_at, job_id]).encode()).decode()


def decode_cursor(cursor: str) -> tuple[float, str]:
    """The (created_at, id) a cursor points after; ValueError when it is not one of ours."""
    try:
        created, job_id = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        if not math.isfinite(float(created)):
            raise ValueError("not a finite time")
        return float(created), str(job_id)
    except (ValueError, TypeError, OverflowError) as err:
        raise ValueError(f"cursor {cursor[:40]!r} is not a cursor this service gave out") from err


class Store:
    """Jobs, labels and events behind one sessionmaker."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self.sessions() as s, s.begin():
            yield s

    def ping(self) -> bool:
        with self.sessions() as s:
            return s.execute(select(1)).scalar() == 1

    def add(self, row: JobRow, labels: dict[str, str]) -> JobRow:
        with self.session() as s:
            s.add(row)
            s.flush()
            s.add_all(LabelRow(job_id=row.id, key=k, value=v) for k, v in labels.items())
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
        if not job_ids:
            return out
        with self.sessions() as s:
            for r in s.scalars(select(LabelRow).where(LabelRow.job_id.in_(job_ids))):
                out[r.job_id][r.key] = r.value
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
             ascending: bool) -> tuple[list[JobRow], str | None]:
        """One page of jobs ordered by (created_at, id); the cursor of the next page."""
        q = select(JobRow)
        if owner is not None:
            q = q.where(JobRow.owner == owner)
        if state is not None:
            q = q.where(JobRow.state == state)
        if name is not None:
            q = q.where(JobRow.name == name)
        for k, v in labels.items():
            q = q.where(JobRow.id.in_(select(LabelRow.job_id).where(LabelRow.key == k, LabelRow.value == v)))
        if cursor:
            created, last = decode_cursor(cursor)
            if ascending:
                q = q.where(or_(JobRow.created_at > created, and_(JobRow.created_at == created, JobRow.id > last)))
            else:
                q = q.where(or_(JobRow.created_at < created, and_(JobRow.created_at == created, JobRow.id < last)))
        order = (JobRow.created_at.asc(), JobRow.id.asc()) if ascending else (JobRow.created_at.desc(), JobRow.id.desc())
        with self.sessions() as s:  # a list never shows spec or result: not loaded
            rows = list(s.scalars(q.options(defer(JobRow.spec), defer(JobRow.result))
                                  .order_by(*order).limit(limit + 1)))
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
                                  .order_by(JobRow.priority.desc(), JobRow.created_at.asc(), JobRow.id.asc())))

    def queue_positions(self, job_ids: list[str]) -> dict[str, int]:
        """The 1-based queue position of each of ``job_ids`` that is queued (one query)."""
        wanted = set(job_ids)
        if not wanted:
            return {}
        with self.sessions() as s:
            order = s.execute(select(JobRow.id).where(JobRow.state == "queued")
                              .order_by(JobRow.priority.desc(), JobRow.created_at.asc(), JobRow.id.asc()))
            return {job_id: i for i, (job_id,) in enumerate(order, start=1) if job_id in wanted}

    def queue_position(self, row: JobRow) -> int | None:
        if row.state != "queued":
            return None
        with self.sessions() as s:
            ahead = s.scalar(select(func.count()).select_from(JobRow).where(
                JobRow.state == "queued",
                or_(JobRow.priority > row.priority,
                    and_(JobRow.priority == row.priority,
                         or_(JobRow.created_at < row.created_at,
                             and_(JobRow.created_at == row.created_at, JobRow.id < row.id))))))
        return int(ahead or 0) + 1

    def add_events(self, job_id: str, events: list[Any]) -> None:
        """Store events (idempotent: a seq already stored is skipped)."""
        if not events:
            return
        with self.session() as s:
            seqs = [e.seq for e in events]  # a range, not an IN list: 50,000 new events are one query
            have = set(s.scalars(select(EventRow.seq).where(EventRow.job_id == job_id,
                                                            EventRow.seq >= min(seqs),
                                                            EventRow.seq <= max(seqs))))
            s.add_all(EventRow(job_id=job_id, seq=e.seq, type=e.type, body=e.model_dump_json())
                      for e in events if e.seq not in have)

    def events(self, job_id: str, *, after: int = 0, types: tuple[str, ...] = ()) -> list[tuple[int, str, str]]:
        """(seq, type, json) of a job's stored events after ``after``, in order."""
        q = select(EventRow.seq, EventRow.type, EventRow.body).where(EventRow.job_id == job_id,
                                                                     EventRow.seq > after)
        if types:
            q = q.where(EventRow.type.in_(types))
        with self.sessions() as s:
            return [(r[0], r[1], r[2]) for r in s.execute(q.order_by(EventRow.seq))]

    def failed_since(self, since: float) -> list[JobRow]:
        """Jobs recorded ``failed`` at or after ``since`` (the follower watches them for late events)."""
        with self.sessions() as s:
            return list(s.scalars(select(JobRow).options(defer(JobRow.spec), defer(JobRow.result))
                                  .where(JobRow.state == "failed", JobRow.finished_at >= since)))

    def take_lease(self, name: str, holder: str, ttl_s: float, *, steal_from: str | None = None) -> bool:
        """Take or renew the lease ``name`` for ``holder`` until now + ``ttl_s``; False if another holds it.

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


def now() -> float:
    return time.time()
