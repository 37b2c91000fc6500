"""The service's database: its engine (SQLite with WAL, or a database server), the schema's
migrations, and the connections the store reads and writes on.

SQLite allows one writer at a time: this process's writers take turns on a lock of their
own; a read on the event loop's thread keeps one connection for good.
:class:`raykd.service.store.Store` adds the queries on jobs, labels, events and leases.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from raykd.service.statements import CompiledRead

POOL_SIZE = 40  # >= the API's worker threads (RAYKD_THREADS, default 8) plus the scheduler


class _Held:
    """Releases a lock already acquired, on leaving the ``with`` block."""

    def __init__(self, lock: Any) -> None:
        self.lock = lock

    def __enter__(self) -> None:
        return None

    def __exit__(self, *_exc: object) -> None:
        self.lock.release()


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


class Database:
    """One database behind one sessionmaker, and this process's turns to write to it."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)
        self.local = url.startswith("sqlite")
        """A file on this host: a read takes microseconds and (WAL) never waits for a writer."""
        self._held = threading.local()
        self._writing = threading.RLock()
        """SQLite: this process's writers take turns here (see :meth:`Store.add`)."""

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

    def _read(self, read: CompiledRead, **values: Any) -> list[Any]:
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
        main thread (uvicorn's event loop, where :func:`raykd.service.store.read` runs the
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
