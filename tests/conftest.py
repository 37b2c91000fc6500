"""Shared fixtures: a real local Ray per module and new databases for services (helpers: tests/helpers)."""

from __future__ import annotations

import os
import secrets
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAYKD_TEST", "1")


def _one_auth_mode_for_this_process() -> None:
    """Token auth on, with this session's own token, for every Ray this process starts or joins.

    Ray caches its auth mode and token in the process on first use (``RayConfig``), so a
    test that switched to ``RAY_AUTH_MODE=disabled`` mid-session left the next in-process
    ``ray.init`` with a client that no longer matched its GCS ("InvalidAuthToken"). One
    mode, set before any Ray import, and a token file of our own (not ``~/.ray``) keep every
    module alike whatever order they run in. Services started as subprocesses choose their
    own mode explicitly (``tests/helpers/service.py``).
    """
    if os.environ.get("RAY_AUTH_MODE", "token") != "token":
        return  # the caller chose another mode for the whole run: keep it
    path = Path(tempfile.mkdtemp(prefix="raykd-test-auth-")) / "auth_token"
    path.write_text(secrets.token_hex(32))
    path.chmod(0o600)
    os.environ["RAY_AUTH_MODE"] = "token"
    os.environ.setdefault("RAY_AUTH_TOKEN_PATH", str(path))


_one_auth_mode_for_this_process()


@pytest.fixture(scope="module")
def ray_local() -> Iterator[None]:
    """A real local Ray cluster (2 CPUs, dashboard on loopback: Ray Train queries it)."""
    import ray

    from raykd.engine.cluster import ensure_ray

    if ray.is_initialized():
        ray.shutdown()
    ensure_ray(num_cpus=2)
    yield
    ray.shutdown()


POSTGRES_ENV = "RAYKD_TEST_POSTGRES_URL"


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def databases(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Makes new, empty databases for services: SQLite files, then (second param) PostgreSQL ones.

    ``databases()`` is the URL of a database no one else uses (one per service: two
    services on one database would follow each other's jobs). PostgreSQL: databases of
    their own (dropped after the module) on the server that ``RAYKD_TEST_POSTGRES_URL``
    names (``postgresql+psycopg://user:pw@host/db``, a role that may create databases;
    ``.ci/run`` starts one). Skipped, saying so, where it is unset.
    """
    if request.param == "sqlite":
        yield lambda: f"sqlite:///{tmp_path_factory.mktemp('db') / 'raykd.db'}"
        return
    base = os.environ.get(POSTGRES_ENV)
    if not base:
        pytest.skip(f"{POSTGRES_ENV} is unset: no PostgreSQL server to run this on (.ci/run starts one)")
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    server, made = create_engine(base, isolation_level="AUTOCOMMIT"), []

    def make() -> str:
        made.append(f"raykd_test_{secrets.token_hex(6)}")
        with server.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{made[-1]}"'))
        return str(make_url(base).set(database=made[-1]).render_as_string(hide_password=False))

    yield make
    with server.connect() as conn:
        for name in made:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    server.dispose()


@pytest.fixture(scope="module")
def database_url(databases: Any) -> str:
    """One new database (SQLite, then PostgreSQL: see ``databases``) for the module."""
    return str(databases())
