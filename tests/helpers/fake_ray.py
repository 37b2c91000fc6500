"""Ray's job API as the scheduler sees it, programmed and recorded, and rows and events to feed it.

The scheduler and route tests (``tests/unit/service/``) stage the orderings that matter with
:class:`FakeRay`; the real Ray runs in ``tests/e2e/service/``.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from raykd.core.events import JobFinished, JobStarted, JsonlSink
from raykd.core.jobdir import JobLayout
from raykd.service.ray_jobs import RayRefused, RayUnavailable
from raykd.service.scheduler import Scheduler
from raykd.service.settings import Settings
from raykd.service.store import Store
from raykd.service.tables import JobRow
from tests.helpers.specs import digits_spec

TOKEN = "scheduler-test-admin-token-0123456789"
HEADERS = {"Authorization": f"Bearer {TOKEN}"}


class FakeRay:
    """Ray's job API as the scheduler sees it: answers from ``states``, every call recorded."""

    def __init__(self) -> None:
        self.states: dict[
            str, str
        ] = {}  # submission id -> PENDING/RUNNING/SUCCEEDED/FAILED/STOPPED
        self.calls: list[tuple[Any, ...]] = []
        self.log_text: dict[str, str] = {}
        self.log_chunks: dict[str, list[str]] = {}  # what tail() streams
        self.down = False  # every call raises RayUnavailable
        self.broken: set[str] = set()  # status() of these raises a plain bug
        self.submit_gate: threading.Event | None = None  # submit() waits on it when set
        self.in_submit = threading.Event()
        self.owners: dict[str, str | None] = {}

    def _check(self) -> None:
        if self.down:
            raise RayUnavailable("Ray at http://fake did not answer (ConnectionError)")

    def submit(
        self,
        *,
        submission_id: str,
        spec_path: Path,
        job_id: str,
        env: dict[str, str],
        owner: str | None = None,
    ) -> str:
        self.calls.append(("submit", submission_id, job_id, dict(env)))
        self.owners[submission_id] = owner
        self.in_submit.set()
        if self.submit_gate is not None:
            self.submit_gate.wait(10)
        self._check()
        if submission_id in self.states:
            raise RayRefused(
                f"Job with submission_id {submission_id} already exists. "
                "Please use a different submission_id."
            )
        self.states[submission_id] = "PENDING"
        return submission_id

    def status(self, submission_id: str) -> str | None:
        self.calls.append(("status", submission_id))
        self._check()
        if submission_id in self.broken:
            raise ValueError(f"a bug while asking about {submission_id}")
        return self.states.get(submission_id)

    def stop(self, submission_id: str) -> bool:
        self.calls.append(("stop", submission_id))
        self._check()
        return self.states.get(submission_id) in ("PENDING", "RUNNING")

    def delete(self, submission_id: str) -> bool:
        self.calls.append(("delete", submission_id))
        self._check()
        if self.states.get(submission_id) in ("SUCCEEDED", "FAILED", "STOPPED"):
            del self.states[submission_id]
            return True
        return False

    def logs(self, submission_id: str) -> str:
        self.calls.append(("logs", submission_id))
        self._check()
        return self.log_text.get(submission_id, "")

    def info(self, submission_id: str) -> Any:
        return None

    async def tail(self, submission_id: str) -> Any:
        self.calls.append(("tail", submission_id))
        self._check()
        for chunk in self.log_chunks.get(submission_id, []):
            yield chunk

    def called(self, kind: str) -> list[tuple[Any, ...]]:
        return [c for c in self.calls if c[0] == kind]


def make_scheduler(settings: Settings, store: Store, ray: FakeRay, **changes: Any) -> Scheduler:
    return Scheduler(settings.model_copy(update=changes), store, ray)  # type: ignore[arg-type]


def add_job(store: Store, job_id: str, **fields: Any) -> JobRow:
    row = JobRow(
        id=job_id,
        name="test",
        kind="run",
        owner="admin",
        state="queued",
        priority=0,
        spec={"name": "test"},
        idempotency_key=None,
        created_at=time.time(),
        latest_metrics={},
        attempts=0,
        progress=0.0,
        last_seq=0,
        cancel_requested=False,
    )
    for k, v in fields.items():
        setattr(row, k, v)
    return store.add(row, {})


def write_events(settings: Settings, job_id: str, *events: Any) -> None:
    (settings.storage / job_id).mkdir(parents=True, exist_ok=True)
    sink = JsonlSink(settings.storage / job_id / JobLayout.EVENTS, job_id)
    for e in events:
        sink.emit(e)


def started(attempt: int, submission_id: str | None) -> JobStarted:
    return JobStarted(
        name="test",
        spec_hash="x",
        attempt=attempt,
        total_epochs=1,
        students=1,
        submission_id=submission_id,
    )


def finished() -> JobFinished:
    return JobFinished(result="result.json", seconds=1.0)


def post_job(client: Any, **body: Any) -> Any:
    return client.post(
        "/api/v1/jobs", json={"spec": digits_spec("/unused"), **body}, headers=HEADERS
    )
