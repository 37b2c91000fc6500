"""The service's unit tests: a real SQLite store and settings for a paused service per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from raykd.service.app import create_app
from raykd.service.database import migrate
from raykd.service.settings import Settings
from raykd.service.store import Store
from tests.helpers.fake_ray import TOKEN, FakeRay


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        token=TOKEN,
        storage=tmp_path / "storage",
        paused=True,  # type: ignore[arg-type]
        ray_address="http://127.0.0.1:1",
        poll_s=0.2,
    )


@pytest.fixture
def store(settings: Settings) -> Store:
    settings.storage.mkdir(parents=True, exist_ok=True)
    migrate(settings.db_url())
    return Store(settings.db_url())


@pytest.fixture
def app(settings: Settings) -> Iterator[tuple[TestClient, FakeRay, Any]]:
    ray = FakeRay()
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        state = client.app.state.raykd  # type: ignore[attr-defined]
        state.scheduler.stop()  # the tests tick it themselves, in the order they stage
        state.ray = state.scheduler.ray = state.scheduler.follower.ray = ray
        yield client, ray, state
