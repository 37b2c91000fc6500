"""Persistence: jobs, their labels and their event history, in SQLAlchemy 2 (SQLite by default).

The schema is created and upgraded by Alembic (``raykd/service/migrations``) when the
service starts. Everything a user sees survives a restart of the service and of the Ray
head: the job record, its spec, its final result and every event it wrote.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import json
import math
import threading
import time
from collections import namedtuple
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

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
    bindparam,
    create_engine,
    event,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, defer, mapped_column, sessionmaker
from starlette.concurrency import run_in_threadpool

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


SUMMARY = (JobRow.id, JobRow.name, JobRow.kind, JobRow.owner, JobRow.state, JobRow.priority,
           JobRow.max_run_s, JobRow.stage, JobRow.progress, JobRow.latest_metrics, JobRow.error,
           JobRow.note, JobRow.attempts, JobRow.created_at, JobRow.started_at, JobRow.finished_at)
"""The columns of a job that the API's views show (a list shows these; one job adds
spec and result)."""
QUEUE_ORDER = (JobRow.priority.desc(), JobRow.created_at.asc(), JobRow.id.asc())
"""Queued jobs start in this order."""


def _ahead(priority: Any, created_at: Any, job_id: Any) -> Any:
    """How many queued jobs start before a queued job with these keys (one COUNT)."""
    return select(func.count()).select_from(JobRow).where(
        JobRow.state == "queued",
        or_(JobRow.priority > priority,
            and_(JobRow.priority == priority,
                 or_(JobRow.created_at < created_at,
                     and_(JobRow.created_at == created_at, JobRow.id < job_id)))))


# The API's reads, built once: building a statement per request (and its cache key) cost
# more than running it (profiled under 50 clients: a third of a request's CPU).
_AHEAD = _ahead(bindparam("priority"), bindparam("created_at"), bindparam("id"))
_JOB = select(*SUMMARY, JobRow.spec, JobRow.result).where(JobRow.id == bindparam("id"))
_LABELS = select(LabelRow.job_id, LabelRow.key, LabelRow.value).where(
    LabelRow.job_id.in_(bindparam("ids", expanding=True)))
_QUEUE = select(JobRow.id, func.row_number().over(order_by=QUEUE_ORDER).label("pos")) \
    .where(JobRow.state == "queued").subquery()
_POSITIONS = select(_QUEUE.c.id, _QUEUE.c.pos).where(
    _QUEUE.c.id.in_(bindparam("ids", expanding=True)))


class _Read:
    """A read compiled once per dialect and run on a DBAPI connection as it is: for the
    API's reads, SQLAlchemy's work per execution (execution context, result metadata, a
    Connection) cost several times SQLite's own (profiled under 50 clients). Parameters
    are the statement's bindparam names (a list for an expanding one: compiled once per
    length); rows come back as the driver gives them.
    """

    def __init__(self, stmt: Any) -> None:
        self.stmt = stmt
        self._compiled: dict[Any, tuple[str, tuple[str, ...] | None, dict[str, Any]]] = {}

    def _for(self, dialect: Any,
             sizes: dict[str, int]) -> tuple[str, tuple[str, ...] | None, dict[str, Any]]:
        """The SQL, the order of its positional parameters (None: named) and the values of
        the statement's own literals (e.g. ``state = 'queued'``)."""
        key = (dialect.name, *sorted(sizes.items()))
        found = self._compiled.get(key)
        if found is None:
            fixed = {k: v for k, v in self.stmt.compile(dialect=dialect)
                     .construct_params(_check=False).items() if v is not None}
            expanded = self.stmt.params({k: [None] * n for k, n in sizes.items()}) \
                .compile(dialect=dialect, compile_kwargs={"render_postcompile": True})
            order = tuple(expanded.positiontup) if expanded.positional else None
            found = self._compiled[key] = (str(expanded), order, fixed)
        return found

    def rows(self, dbapi: Any, dialect: Any, **values: Any) -> list[Any]:
        lists = {k: v for k, v in values.items() if isinstance(v, list)}
        sql, order, fixed = self._for(dialect, {k: len(v) for k, v in lists.items()})
        params = {**fixed, **values}
        for k, v in lists.items():  # an expanding parameter's values are k_1 ... k_n
            params.update((f"{k}_{i}", x) for i, x in enumerate(v, start=1))
        cursor = dbapi.cursor()
        try:
            cursor.execute(sql, tuple(params[k] for k in order) if order is not None else params)
            return list(cursor.fetchall())
        finally:
            cursor.close()


class _Insert:
    """An INSERT of a row of ``table`` (every column but an autoincrement key), compiled once
    per dialect, its values through the columns' bind processors (JSON to text, ...), run on
    a DBAPI connection: the ORM's unit of work cost ~1.5 ms of CPU per submitted job and
    SQLAlchemy's execution ~0.1 ms per statement, SQLite's insert ~0.05 ms (profiled)."""

    def __init__(self, table: Any) -> None:
        self.columns = [c for c in table.columns if not (c.primary_key and c.autoincrement is True
                                                         and isinstance(c.type, Integer))]
        self.stmt = insert(table).values({c.key: bindparam(c.key, type_=c.type)
                                          for c in self.columns})
        self.defaults = {c.key: c.default.arg if c.default is not None and c.default.is_scalar
                         else None for c in self.columns}
        self._compiled: dict[str, tuple[str, tuple[str, ...] | None, dict[str, Any]]] = {}

    def _for(self, dialect: Any) -> tuple[str, tuple[str, ...] | None, dict[str, Any]]:
        found = self._compiled.get(dialect.name)
        if found is None:
            compiled = self.stmt.compile(dialect=dialect)
            order = tuple(compiled.positiontup) if compiled.positional else None
            procs = {c.key: c.type.dialect_impl(dialect).bind_processor(dialect)
                     for c in self.columns}
            found = self._compiled[dialect.name] = (str(compiled), order,
                                                    {k: p for k, p in procs.items() if p})
        return found

    def run(self, dbapi: Any, dialect: Any, rows: list[dict[str, Any]]) -> None:
        """Insert ``rows`` (column values; a column left out gets its default)."""
        sql, order, procs = self._for(dialect)
        params = []
        for row in rows:
            values = {**self.defaults, **row}
            for k, proc in procs.items():
                values[k] = proc(values[k])
            params.append(tuple(values[k] for k in order) if order is not None else values)
        cursor = dbapi.cursor()
        try:
            cursor.executemany(sql, params)
        except dialect.dbapi.IntegrityError as err:
            raise IntegrityError(sql, params, err) from err
        finally:
            cursor.close()


_INSERTS: dict[type, _Insert] = {}


def _inserting(model: type) -> _Insert:
    found = _INSERTS.get(model)
    if found is None:
        found = _INSERTS[model] = _Insert(model.__table__)  # type: ignore[attr-defined]
    return found


_JOB_READ = _Read(_JOB)
_LABELS_READ = _Read(select(LabelRow.key, LabelRow.value).where(LabelRow.job_id == bindparam("id")))
_AHEAD_READ = _Read(_AHEAD)
_JOB_FIELDS = tuple(c.key for c in _JOB.selected_columns)
_JSON_FIELDS = ("latest_metrics", "spec", "result")


def _json_loaders(dialect: Any) -> dict[str, Any]:
    """Per JSON column of a job: what turns the driver's value into Python (None: as is)."""
    table = JobRow.__table__.c
    return {k: table[k].type.dialect_impl(dialect).result_processor(dialect, None)
            for k in _JSON_FIELDS}


_POSITIONS_READ = _Read(_POSITIONS)
_LABELS_MANY_READ = _Read(_LABELS)
JobSummary = namedtuple("JobSummary", [c.key for c in SUMMARY])  # type: ignore[misc]
"""A row of a list: the :data:`SUMMARY` columns, named as :class:`JobRow`'s attributes."""


@functools.lru_cache(maxsize=512)
def _page_read(owner: bool, state: bool, name: bool, labels: int, cursor: bool,
               ascending: bool) -> _Read:
    """The page query for this combination of filters (parameters: owner, state, name,
    key<i>/value<i>, after_created/after_id, limit)."""
    q = select(*SUMMARY)
    for column, used in ((JobRow.owner, owner), (JobRow.state, state), (JobRow.name, name)):
        if used:
            q = q.where(column == bindparam(column.key))
    for i in range(labels):
        q = q.where(JobRow.id.in_(select(LabelRow.job_id).where(
            LabelRow.key == bindparam(f"key{i}"), LabelRow.value == bindparam(f"value{i}"))))
    if cursor:
        created, last = bindparam("after_created"), bindparam("after_id")
        if ascending:
            q = q.where(or_(JobRow.created_at > created,
                            and_(JobRow.created_at == created, JobRow.id > last)))
        else:
            q = q.where(or_(JobRow.created_at < created,
                            and_(JobRow.created_at == created, JobRow.id < last)))
    order = ((JobRow.created_at.asc(), JobRow.id.asc()) if ascending
             else (JobRow.created_at.desc(), JobRow.id.desc()))
    return _Read(q.order_by(*order).limit(bindparam("limit")))


class _Held:
    """Releases a lock already acquired, on leaving the ``with`` block."""

    def __init__(self, lock: Any) -> None:
        self.lock = lock

    def __enter__(self) -> None:
        return None

    def __exit__(self, *_exc: object) -> None:
        self.lock.release()


def _set_fields(obj: Base) -> dict[str, Any]:
    """The column values set on a new ORM object (unset ones: the column's default)."""
    return {c.key: obj.__dict__[c.key] for c in obj.__table__.columns if c.key in obj.__dict__}


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
        self.local = url.startswith("sqlite")
        """A file on this host: a read takes microseconds and (WAL) never waits for a writer."""
        self._json_loaders = _json_loaders(self.engine.dialect)
        self._held = threading.local()
        self._writing = threading.RLock()
        """SQLite: this process's writers take turns here (see :meth:`add`)."""

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session in a transaction that writes (committed at the end)."""
        with self._turn(), self.sessions() as s, s.begin():
            yield s

    def _turn(self, wait: bool = True) -> Any:
        """This process's turn to write (SQLite: one writer at a time; a thread that finds
        SQLite's write lock taken sleeps in its busy handler, milliseconds and growing,
        instead of waking when the lock is free). Without ``wait``: None when another
        thread of this process is writing. Other databases: no turn to take."""
        if not self.local:
            return contextlib.nullcontext()
        if not self._writing.acquire(blocking=wait):
            return None
        return _Held(self._writing)

    def ping(self) -> bool:
        with self.sessions() as s:
            return s.execute(select(1)).scalar() == 1

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
                _inserting(JobRow).run(dbapi, dialect, [_set_fields(row)])
                if labels:
                    _inserting(LabelRow).run(dbapi, dialect, [
                        {"job_id": row.id, "key": k, "value": v} for k, v in labels.items()])
                for other in also:
                    _inserting(type(other)).run(dbapi, dialect, [_set_fields(other)])
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
            for job_id, key, value in self._read(_LABELS_MANY_READ, ids=list(job_ids)):
                out[job_id][key] = value
        return out

    def _read(self, read: _Read, **values: Any) -> list[Any]:
        """The rows of ``read`` (one connection of :meth:`_reader`)."""
        dbapi = self._reader()
        try:
            return read.rows(dbapi, self.engine.dialect, **values)
        finally:
            self._done(dbapi)

    def _done(self, dbapi: Any) -> None:
        if dbapi is not getattr(self._held, "conn", None):
            dbapi.close()  # back to the pool

    def _reader(self) -> Any:
        """A DBAPI connection for a read (give it back with :meth:`_done`). SQLite on the
        main thread (uvicorn's event loop, where :func:`raykd.service.deps.read` runs the
        API's reads): one kept for good (the pool's checkout and return cost as much as a
        read by key; a SELECT opens no transaction on it, so it sees every commit). Else,
        and on other threads (which may end), one from the pool."""
        held = getattr(self._held, "conn", None)
        if held is not None:
            return held
        conn = self.engine.raw_connection()
        if self.local and threading.current_thread() is threading.main_thread():
            self._held.conn = conn
        return conn

    def view(self, job_id: str) -> dict[str, Any] | None:
        """The job as the API shows it (its columns, spec, result, labels and queue
        position), read on one pooled connection by precompiled SQL; None when there is none."""
        dialect = self.engine.dialect
        dbapi = self._reader()
        try:
            found = _JOB_READ.rows(dbapi, dialect, id=job_id)
            if not found:
                return None
            out = dict(zip(_JOB_FIELDS, found[0], strict=True))
            out["labels"] = dict(_LABELS_READ.rows(dbapi, dialect, id=job_id))
            out["queue_position"] = None
            if out["state"] == "queued":
                ahead = _AHEAD_READ.rows(dbapi, dialect, priority=out["priority"],
                                         created_at=out["created_at"], id=job_id)
                out["queue_position"] = int(ahead[0][0]) + 1
        finally:
            self._done(dbapi)
        for key, load in self._json_loaders.items():
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
        read = _page_read(owner is not None, state is not None, name is not None, len(labels),
                          bool(cursor), ascending)
        load = self._json_loaders["latest_metrics"] or (lambda x: x)
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
        return {job_id: int(pos) for job_id, pos in self._read(_POSITIONS_READ, ids=list(job_ids))}

    def queue_position(self, row: Any) -> int | None:
        """The 1-based queue position of ``row`` (None unless it is queued)."""
        if row.state != "queued":
            return None
        ahead = self._read(_AHEAD_READ, priority=row.priority, created_at=row.created_at,
                           id=row.id)
        return int(ahead[0][0]) + 1

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


T = TypeVar("T")


async def read(store: Store, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)``, a short read of ``store``: on the event loop for SQLite (a
    file on this host: a read by key takes tens of microseconds, and in WAL mode a reader
    never waits for a writer), where a hop to a worker thread and back costs more than the
    read; in the thread pool for a database server (a network round trip)."""
    if store.local:
        return fn(*args, **kwargs)
    return await run_in_threadpool(fn, *args, **kwargs)
