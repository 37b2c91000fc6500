"""The store on each database the service supports: a SQLite file and PostgreSQL.

The schema comes from the Alembic migrations (0001, 0002: ``batch_alter_table`` columns,
JSON, BigInteger offsets); every query the service makes runs on both. PostgreSQL runs
where ``RAYKD_TEST_POSTGRES_URL`` names a server (``.ci/run`` starts one) and is skipped,
saying so, elsewhere.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import inspect
from sqlalchemy.exc import IntegrityError

from raykd.core.events import parse_event
from raykd.service.database import migrate
from raykd.service.statements import decode_cursor
from raykd.service.store import Store
from raykd.service.tables import JobRow


@pytest.fixture(scope="module")
def store(database_url: str) -> Iterator[Store]:
    migrate(database_url)
    migrate(database_url)  # a second upgrade finds the schema current and changes nothing
    found = Store(database_url)
    yield found
    found.engine.dispose()


def job(job_id: str, **fields: Any) -> JobRow:
    row = JobRow(id=job_id, name="n", kind="run", owner="alice", state="queued", priority=0,
                 spec={"name": "n", "nested": {"list": [1, 2.5, None], "text": "é"}}, idempotency_key=None,
                 created_at=time.time(), latest_metrics={}, attempts=0, progress=0.0, last_seq=0,
                 cancel_requested=False)
    for k, v in fields.items():
        setattr(row, k, v)
    return row


def test_the_migrated_schema_has_every_table_and_column(store: Store) -> None:
    names = inspect(store.engine)
    assert {"jobs", "job_labels", "job_events", "audit_log", "service_lease"} <= set(names.get_table_names())
    columns = {c["name"] for c in names.get_columns("jobs")}
    assert {"request_hash", "events_offset", "max_run_s", "log_offset"} <= columns


def test_jobs_round_trip_with_json_big_offsets_and_labels(store: Store) -> None:
    store.add(job("rt-1", idempotency_key="k-1", events_offset=2**40, log_offset=2**33 + 1),
              {"team": "vision", "run": "a"})
    got = store.get("rt-1")
    assert got is not None and got.spec["nested"] == {"list": [1, 2.5, None], "text": "é"}
    assert (got.events_offset, got.log_offset) == (2**40, 2**33 + 1)  # beyond 32 bits
    assert store.labels(["rt-1"]) == {"rt-1": {"team": "vision", "run": "a"}}
    assert store.by_key("alice", "k-1") is not None and store.by_key("bob", "k-1") is None
    with pytest.raises(IntegrityError):  # one key per owner: the idempotency guarantee
        store.add(job("rt-2", idempotency_key="k-1"), {})
    store.update("rt-1", state="succeeded", result={"students": [{"acc": 0.9}]}, latest_metrics={"loss": 0.1})
    assert store.get("rt-1").result == {"students": [{"acc": 0.9}]}  # type: ignore[union-attr]


def test_queue_order_positions_and_pages(store: Store) -> None:
    t = time.time()
    for i, priority in enumerate((0, 5, 5, -1)):
        store.add(job(f"q-{i}", priority=priority, created_at=t + i), {"page": "yes"})
    queued = [r.id for r in store.queue() if r.id.startswith("q-")]
    assert queued == ["q-1", "q-2", "q-0", "q-3"]  # priority, then submission time
    assert store.queue_positions(["q-0", "q-3"]) == {"q-0": 3, "q-3": 4}
    assert store.queue_position(store.get("q-2")) == 2  # type: ignore[arg-type]
    seen, cursor = [], None
    while True:
        rows, cursor = store.page(owner="alice", state=None, name=None, labels={"page": "yes"}, limit=3,
                                  cursor=cursor, ascending=True)
        seen += [r.id for r in rows]
        if cursor is None:
            break
        assert decode_cursor(cursor)[1] == rows[-1].id
    assert seen == ["q-0", "q-1", "q-2", "q-3"]


def test_events_are_stored_once_in_order_and_deleted_with_their_job(store: Store) -> None:
    store.add(job("ev-1"), {"x": "y"})
    events = [parse_event(f'{{"seq": {i}, "type": "message", "time": {i}.0, "job_id": "ev-1", "text": "m{i}"}}')
              for i in range(1, 6)]
    store.add_events("ev-1", events[:3])
    store.add_events("ev-1", events)  # the first three again: skipped
    assert [seq for seq, _, _ in store.events("ev-1")] == [1, 2, 3, 4, 5]
    assert [seq for seq, _, _ in store.events("ev-1", after=3, types=("message",))] == [4, 5]
    store.delete("ev-1")
    assert store.get("ev-1") is None and store.events("ev-1") == [] and store.labels(["ev-1"]) == {"ev-1": {}}
