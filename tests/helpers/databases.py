"""Databases of their own for the services tests start: SQLite files, PostgreSQL databases."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

POSTGRES_ENV = "RAYKD_TEST_POSTGRES_URL"
"""Names a PostgreSQL server (``postgresql+psycopg://user:pw@host/db``, a role that may create
databases; ``.ci/run`` starts one): the store's tests run on it too."""


def sqlite_databases(tmp_path_factory: pytest.TempPathFactory) -> Callable[[], str]:
    """Makes the URL of a new SQLite file at each call."""
    return lambda: f"sqlite:///{tmp_path_factory.mktemp('db') / 'raykd.db'}"


@contextmanager
def postgres_databases(base: str) -> Iterator[Callable[[], str]]:
    """Makes databases of their own on the server ``base`` names; drops them at the end."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    server, made = create_engine(base, isolation_level="AUTOCOMMIT"), []

    def make() -> str:
        made.append(f"raykd_test_{secrets.token_hex(6)}")
        with server.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{made[-1]}"'))
        return str(make_url(base).set(database=made[-1]).render_as_string(hide_password=False))

    try:
        yield make
    finally:
        with server.connect() as conn:
            for name in made:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        server.dispose()
