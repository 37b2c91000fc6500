"""Shared fixtures: a real local Ray shared by the modules that ask for it, and new databases
for services (what test modules share besides fixtures: tests/helpers)."""

from __future__ import annotations

import os
import secrets
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

# digits_spec's home is tests/helpers/specs.py: here for test files written before the move
from tests.helpers.databases import POSTGRES_ENV, postgres_databases, sqlite_databases
from tests.helpers.specs import digits_spec  # noqa: F401

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


_SHARED_RAY: dict[str, Any] = {}  # the shared local Ray: its GCS address and workers' settings


def _worker_settings() -> dict[str, str]:
    """What a local Ray's workers get from this process at ``ray.init`` (its import path and
    model allowlist: Ray fixes a runtime environment when it starts)."""
    from raykd.core.allowlist import allowlist_env
    from raykd.engine.cluster import worker_import_path

    return {**worker_import_path(), **allowlist_env()}


def _is_shared_ray(settings: dict[str, str]) -> bool:
    import ray

    return (ray.is_initialized() and _SHARED_RAY.get("settings") == settings
            and _SHARED_RAY.get("gcs") == ray.get_runtime_context().gcs_address)


@pytest.fixture(scope="session")
def _ray_session() -> Iterator[None]:
    """Shuts the shared local Ray down when the session ends."""
    yield
    import ray

    if ray.is_initialized():
        ray.shutdown()


@pytest.fixture(scope="module")
def ray_local(_ray_session: None) -> Iterator[None]:
    """A real local Ray cluster (2 CPUs, dashboard on loopback: Ray Train queries it).

    One for the whole session, shared by the modules that ask for it (a start costs seconds
    to tens of seconds). It is started again only where it is not the one this fixture started
    (a module shut it down for a cluster of its own shape) or where a module's workers need
    other settings (a user model's import path or allowlist, fixed when Ray starts).
    """
    import ray

    from raykd.engine.cluster import ensure_ray

    settings = _worker_settings()
    if not _is_shared_ray(settings):
        if ray.is_initialized():
            ray.shutdown()
        ensure_ray(num_cpus=2)
        _SHARED_RAY.update(settings=settings, gcs=ray.get_runtime_context().gcs_address)
    yield


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def databases(request: pytest.FixtureRequest,
              tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[], str]]:
    """Makes new, empty databases for services: SQLite files, then (second param) PostgreSQL ones.

    ``databases()`` is the URL of a database no one else uses (one per service: two
    services on one database would follow each other's jobs). PostgreSQL: databases of
    their own (dropped after the module) on the server that ``RAYKD_TEST_POSTGRES_URL``
    names (``postgresql+psycopg://user:pw@host/db``, a role that may create databases;
    ``.ci/run`` starts one). Skipped, saying so, where it is unset. For tests of the store
    itself (queue, idempotency, paging, restart records): what differs between the two.
    """
    if request.param == "sqlite":
        yield sqlite_databases(tmp_path_factory)
        return
    base = os.environ.get(POSTGRES_ENV)
    if not base:
        pytest.skip(f"{POSTGRES_ENV} is unset: no PostgreSQL server to run this on "
                    "(.ci/run starts one)")
    with postgres_databases(base) as make:
        yield make


@pytest.fixture(scope="module")
def database_url(databases: Callable[[], str]) -> str:
    """One new database (SQLite, then PostgreSQL: see ``databases``) for the module."""
    return str(databases())
