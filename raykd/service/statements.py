"""The store's reads and its insert, built once and compiled once per dialect.

Building a statement per request (and its cache key) cost more than running it, and
SQLAlchemy's work per execution (execution context, result metadata, a Connection) several
times SQLite's own (profiled under 50 clients): the API's reads and a submission's insert
run here as plain DBAPI calls on compiled SQL. Also the list's cursors.
"""

from __future__ import annotations

import base64
import functools
import json
import math
from collections import namedtuple
from typing import Any

from sqlalchemy import (
    Integer,
    and_,
    bindparam,
    func,
    insert,
    or_,
    select,
)
from sqlalchemy.exc import IntegrityError

from raykd.service.tables import JobRow, LabelRow

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


class CompiledRead:
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


class CompiledInsert:
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


_INSERTS: dict[type, CompiledInsert] = {}


def inserting(model: type) -> CompiledInsert:
    found = _INSERTS.get(model)
    if found is None:
        found = _INSERTS[model] = CompiledInsert(model.__table__)  # type: ignore[attr-defined]
    return found


JOB_READ = CompiledRead(_JOB)
LABELS_READ = CompiledRead(select(LabelRow.key, LabelRow.value).where(LabelRow.job_id == bindparam("id")))
AHEAD_READ = CompiledRead(_AHEAD)
JOB_FIELDS = tuple(c.key for c in _JOB.selected_columns)
JSON_FIELDS = ("latest_metrics", "spec", "result")


def json_loaders(dialect: Any) -> dict[str, Any]:
    """Per JSON column of a job: what turns the driver's value into Python (None: as is)."""
    table = JobRow.__table__.c
    return {k: table[k].type.dialect_impl(dialect).result_processor(dialect, None)
            for k in JSON_FIELDS}


POSITIONS_READ = CompiledRead(_POSITIONS)
LABELS_MANY_READ = CompiledRead(_LABELS)
JobSummary = namedtuple("JobSummary", [c.key for c in SUMMARY])  # type: ignore[misc]
"""A row of a list: the :data:`SUMMARY` columns, named as :class:`JobRow`'s attributes."""


@functools.lru_cache(maxsize=512)
def page_read(owner: bool, state: bool, name: bool, labels: int, cursor: bool,
               ascending: bool) -> CompiledRead:
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
    return CompiledRead(q.order_by(*order).limit(bindparam("limit")))


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
