"""Issue 19: the scheduler under a hung Ray, lost database writes, restarts, deadlines and a second service.

Ray's job API is :class:`tests.unit.service.test_scheduler.FakeRay` (it refuses a duplicate submission id
as Ray does) for the orderings, and a real socket that accepts and never answers for the
hung-Ray test against a real ``raykd serve``.
"""

from __future__ import annotations

import json
import random
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from raykd.core.events import (
    Epoch,
    JobFailed,
    JobFinished,
    JobStarted,
    StageFinished,
    StageStarted,
    StudentFinished,
    Trial,
    parse_event,
)
from raykd.core.jobdir import JobLayout
from raykd.core.status import job_status
from raykd.service.attempts import AttemptTracker, this_attempt
from raykd.service.follower import failed_before_start
from raykd.service.ray_jobs import RayJobs
from raykd.service.settings import Settings
from raykd.service.store import Store
from raykd.service.tables import JobRow
from tests.helpers.fake_ray import FakeRay, add_job, finished, make_scheduler, started, write_events

TOKEN = "reliability-test-admin-token-0123456789"


# 14: reconciling after a restart ---------------------------------------------------------


def test_a_job_ray_forgot_on_the_first_look_after_a_restart_is_failed_with_both_notes(
        settings: Settings, store: Store) -> None:
    """The first look's note and the lost job's note used to clash (note= passed twice)."""
    ray = FakeRay()  # the head restarted: Ray knows no submission
    add_job(store, "r", state="running", attempts=1, submission_id="r", started_at=time.time() - 100)
    write_events(settings, "r", started(1, "r"))
    make_scheduler(settings, store, ray).tick()
    row = store.get("r")
    assert row is not None and row.state == "failed"
    assert "reconciled after a service restart" in (row.note or "")
    assert "no longer knows this job" in (row.note or "") and "no longer knows" in (row.error or "")


def test_a_failed_record_is_corrected_when_the_jobs_own_final_event_arrives(
        settings: Settings, store: Store) -> None:
    ray = FakeRay()
    add_job(store, "late", state="running", attempts=1, submission_id="late")
    write_events(settings, "late", started(1, "late"))
    sched = make_scheduler(settings, store, ray)
    sched.tick()  # Ray lost it (an orphaned head runs it on): recorded failed
    assert store.get("late").state == "failed"  # type: ignore[union-attr]
    write_events(settings, "late", Epoch(student=0, epoch=1, epochs=1, metrics={"val_accuracy": 0.9}),
                 finished())
    sched.tick()
    row = store.get("late")
    assert row is not None and (row.state, row.error, row.progress) == ("succeeded", None, 1.0)
    assert (row.note or "").startswith("corrected") and "no longer knows" in (row.note or "")
    assert row.latest_metrics == {"val_accuracy": 0.9}


def test_a_job_submitted_again_under_a_deleted_jobs_id_is_not_judged_by_the_old_ones_events(
        settings: Settings, store: Store) -> None:
    """The follower's memory of a job is keyed by the row, not the id alone: a failed job,
    deleted (record and directory) and submitted again under the same id, gets the same
    submission id and attempt count; it must not inherit the old job's ``job_failed``."""
    import shutil

    ray = FakeRay()
    add_job(store, "again", state="running", attempts=1, submission_id="again")
    ray.states["again"] = "FAILED"
    write_events(settings, "again", started(1, "again"), JobFailed(kind="bug", message="the old job's error"))
    sched = make_scheduler(settings, store, ray)
    sched.tick()
    assert store.get("again").state == "failed"  # type: ignore[union-attr]
    store.delete("again")  # what DELETE /jobs/{id} does: the record, its events and its directory
    shutil.rmtree(settings.storage / "again")
    del ray.states["again"]
    add_job(store, "again", state="running", attempts=1, submission_id="again", created_at=time.time() + 1)
    ray.states["again"] = "RUNNING"
    write_events(settings, "again", started(1, "again"))
    sched.tick()
    row = store.get("again")
    assert row is not None and (row.state, row.error) == ("running", None), (row.state, row.error)
    write_events(settings, "again", finished())
    sched.tick()
    assert store.get("again").state == "succeeded"  # type: ignore[union-attr]


# 4: one job reaches Ray once ------------------------------------------------------------


def test_a_submission_whose_database_write_failed_is_adopted_not_failed(
        settings: Settings, store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    ray = FakeRay()
    add_job(store, "a")
    original, failures = Store.update, []

    def update_once_failing(self: Store, job_id: str, **fields: Any) -> JobRow | None:
        if fields.get("state") == "pending" and not failures:  # the write after Ray took it
            failures.append(job_id)
            raise OSError("database is locked (injected)")
        return original(self, job_id, **fields)

    monkeypatch.setattr(Store, "update", update_once_failing)
    sched = make_scheduler(settings, store, ray, paused=False)
    sched.tick()
    assert failures == ["a"] and ray.states == {"a": "PENDING"}
    assert store.get("a").state == "submitting"  # type: ignore[union-attr]
    sched.tick()  # asks again with the same id; Ray refuses the duplicate: that job is adopted
    row = store.get("a")
    assert row is not None and (row.state, row.submission_id, row.attempts, row.error) == ("pending", "a", 1, None)
    assert [c[1] for c in ray.called("submit")] == ["a", "a"] and list(ray.states) == ["a"]
    ray.states["a"] = "RUNNING"
    write_events(settings, "a", started(1, "a"))
    sched.tick()
    assert store.get("a").state == "running"  # type: ignore[union-attr]


# 13: the owner in Ray's metadata; one scheduler per database -----------------------------


class _Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def submit_job(self, **kwargs: Any) -> str:
        self.calls.append(("submit_job", kwargs))
        return str(kwargs["submission_id"])


def test_the_ray_job_carries_its_owner_and_runs_the_configured_driver_command(
        settings: Settings, store: Store) -> None:
    ray = FakeRay()
    add_job(store, "m", owner="alice")
    make_scheduler(settings, store, ray, paused=False).tick()
    assert ray.owners == {"m": "alice"}

    jobs = RayJobs("http://127.0.0.1:1", driver_command="/opt/venv/bin/python -m raykd")
    jobs._client = recorder = _Recorder()
    jobs.submit(submission_id="m", spec_path=Path("/s/m.json"), job_id="m", env={}, owner="alice")
    (_, kwargs), = recorder.calls
    assert kwargs["metadata"] == {"raykd_job_id": "m", "raykd_owner": "alice"}
    assert kwargs["entrypoint"] == "/opt/venv/bin/python -m raykd run /s/m.json --job-id m"


def test_two_schedulers_on_one_database_never_both_schedule(settings: Settings, store: Store) -> None:
    ray_a, ray_b = FakeRay(), FakeRay()
    a = make_scheduler(settings, store, ray_a, paused=False, max_running=5, lease_s=60)
    b = make_scheduler(settings, Store(settings.db_url()), ray_b, paused=False, max_running=5, lease_s=60)
    add_job(store, "one")
    a.tick()
    add_job(store, "two")
    b.tick()
    assert ray_b.calls == [] and store.get("two").state == "queued"  # type: ignore[union-attr]
    a.tick()
    assert store.get("two").state == "pending" and len(ray_a.called("submit")) == 2  # type: ignore[union-attr]
    a.stop()  # gives the lease up: the other takes over at its next tick
    ray_b.states.update(ray_a.states)
    add_job(store, "three")
    b.tick()
    assert [c[1] for c in ray_b.called("submit")] == ["three"] and ray_b.called("status")
    # a lease that is not renewed expires: the first scheduler cannot take it back meanwhile
    c = make_scheduler(settings, Store(settings.db_url()), FakeRay(), lease_s=60)
    assert not c.leader()
    short = make_scheduler(settings, store, FakeRay(), lease_s=0.3)
    b.stop()
    assert short.leader()
    deadline = time.monotonic() + 10
    while not c.leader() and time.monotonic() < deadline:  # waits for `short`'s lease to lapse
        threading.Event().wait(0.05)
    assert c.leader() and not short.leader()


# 7: the deadline -------------------------------------------------------------------------


def test_the_lease_must_outlast_three_ray_calls(tmp_path: Path) -> None:
    """A lease shorter than a hung Ray call would lapse mid-tick: another service could take
    it and submit the same queued job while this one still does."""
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=r"lease_s \(30\) must be at least 3 x ray_timeout_s \(20\)"):
        Settings(token=TOKEN, storage=tmp_path, lease_s=30, ray_timeout_s=20)
    assert Settings(token=TOKEN, storage=tmp_path).lease_s >= 3 * Settings(token=TOKEN, storage=tmp_path).ray_timeout_s


def test_a_job_past_its_deadline_is_stopped_on_ray_and_timed_out(settings: Settings, store: Store) -> None:
    ray = FakeRay()
    add_job(store, "d", state="running", attempts=1, submission_id="d", max_run_s=5.0)
    add_job(store, "ok", state="running", attempts=1, submission_id="ok", max_run_s=3600.0)
    for job_id in ("d", "ok"):
        ray.states[job_id] = "RUNNING"
        write_events(settings, job_id, started(1, job_id).model_copy(update={"time": time.time() - 10}))
    sched = make_scheduler(settings, store, ray)
    sched.tick()
    row = store.get("d")
    assert row is not None and row.state == "timed_out" and ray.called("stop") == [("stop", "d")]
    assert "deadline" in (row.error or "") and "max_run_s = 5 s" in (row.error or "")
    assert store.get("ok").state == "running"  # type: ignore[union-attr]
    ray.states["d"] = "STOPPED"  # the driver ends as a cancelled job does: the record stays timed out
    write_events(settings, "d", JobFailed(kind="cancelled", message="cancelled"))
    sched.tick()
    assert store.get("d").state == "timed_out"  # type: ignore[union-attr]


def test_a_job_whose_driver_never_starts_is_timed_out_at_its_deadline_too(
        settings: Settings, store: Store) -> None:
    """Ray keeps it PENDING (no resources, a runtime env that never gets ready): no event ever
    comes, and the deadline used to count only from the driver's first event."""
    ray = FakeRay()
    add_job(store, "p", state="pending", attempts=1, submission_id="p", max_run_s=5.0)
    ray.states["p"] = "PENDING"
    sched = make_scheduler(settings, store, ray)
    sched.tick()
    assert store.get("p").state == "pending" and ray.called("stop") == []  # type: ignore[union-attr]
    sched.follower.waiting_since["p"] -= 10  # as if the first look were 10 s ago
    sched.tick()
    row = store.get("p")
    assert row is not None and row.state == "timed_out" and ray.called("stop") == [("stop", "p")]
    assert "max_run_s = 5 s" in (row.error or "")


# 15: a driver that never started says why ------------------------------------------------


@pytest.mark.parametrize("log_text", [
    "/bin/sh: 1: raykd: not found\nRunning entrypoint for job e: raykd run /s/e.json --job-id e\n",
    "Running entrypoint for job e: raykd run /s/e.json --job-id e\n/bin/sh: 1: raykd: not found\n",
])
def test_a_driver_that_fails_before_it_starts_is_reported_with_the_line_that_says_why(
        settings: Settings, store: Store, log_text: str) -> None:
    ray = FakeRay()
    add_job(store, "e", state="pending", attempts=1, submission_id="e")
    ray.states["e"] = "FAILED"
    ray.log_text["e"] = log_text
    make_scheduler(settings, store, ray).tick()
    row = store.get("e")
    assert row is not None and row.state == "failed"
    assert (row.error or "").endswith("/bin/sh: 1: raykd: not found"), row.error
    assert failed_before_start("Running entrypoint for job x: raykd run\n") != "Running entrypoint for job x: raykd run"


# 10: following costs what is new --------------------------------------------------------


def _line(event: Any, seq: int) -> bytes:
    return event.model_copy(update={"seq": seq, "job_id": "big"}).model_dump_json().encode() + b"\n"


def test_a_ticks_cost_does_not_grow_with_the_events_already_read(settings: Settings, store: Store) -> None:
    ray = FakeRay()
    add_job(store, "big", state="running", attempts=1, submission_id="big")
    ray.states["big"] = "RUNNING"
    path = settings.storage / "big" / JobLayout.EVENTS
    path.parent.mkdir(parents=True)
    n = 50_000
    events = [JobStarted(name="t", spec_hash="x", attempt=1, total_epochs=100_000, students=1,
                         submission_id="big")]
    events += [Epoch(student=0, epoch=i, epochs=100_000, metrics={"val_accuracy": i / n}) for i in range(1, n)]
    path.write_bytes(b"".join(_line(e, i) for i, e in enumerate(events, start=1)))
    sched = make_scheduler(settings, store, ray)
    sched.tick()
    assert sched.follower.work["lines_parsed"] == n and store.get("big").last_seq == n  # type: ignore[union-attr]

    def tick_cost(s: Any, new: int) -> dict[str, int]:
        with path.open("ab") as f:
            for _ in range(new):
                seq = s_last[0] + 1
                f.write(_line(Epoch(student=0, epoch=seq, epochs=100_000, metrics={}), seq))
                s_last[0] = seq
        before = dict(s.follower.work)
        s.tick()
        return {k: s.follower.work[k] - before[k] for k in before}

    s_last = [n]
    cost = tick_cost(sched, 5)
    assert cost["lines_parsed"] == 5 and cost["rows_loaded"] == 0 and cost["bytes_read"] < 5 * 400
    assert tick_cost(sched, 0) == {"bytes_read": 0, "lines_parsed": 0, "rows_loaded": 0}
    row = store.get("big")
    assert row is not None and row.last_seq == n + 5 and row.progress == pytest.approx((n + 4) / 100_000)
    # a restarted service rebuilds from the database once, then reads only what is new
    sched.stop()  # the old service is gone (its lease with it)
    again = make_scheduler(settings, store, ray)
    first = tick_cost(again, 3)
    assert first["rows_loaded"] == n + 5 and first["lines_parsed"] == 3
    cost = tick_cost(again, 2)
    assert cost["lines_parsed"] == 2 and cost["rows_loaded"] == 0 and cost["bytes_read"] < 2 * 400
    assert store.get("big").progress == pytest.approx((n + 9) / 100_000)  # type: ignore[union-attr]


def _old_follow_view(events: list[Any], sid: str, attempts: int,
                     alive: bool | None) -> tuple[bool, Any, Any]:
    """The scheduler's view before this change: :func:`this_attempt` and :func:`job_status`."""

    class Row:
        submission_id, attempts = sid, 0

    row = Row()
    row.attempts = attempts
    start = this_attempt(events, row)  # type: ignore[arg-type]
    if start is None:
        return False, None, None
    later = [i for i, e in enumerate(events) if i > start and e.type == "job_started"]
    current = events[: later[0]] if later else events
    status = job_status(current, process_alive=alive)
    return True, status, events[start].time


def test_the_incremental_status_agrees_with_job_status_on_random_histories() -> None:
    rng = random.Random(19)
    for _ in range(1000):
        sids = ["s", "s.r1", None]
        events: list[Any] = []
        for seq in range(1, rng.randint(1, 25)):
            kind = rng.random()
            if kind < 0.15:
                e: Any = JobStarted(name="t", spec_hash="x", attempt=rng.randint(1, 3), total_epochs=6,
                                    students=2, submission_id=rng.choice(sids))
            elif kind < 0.5:
                e = Epoch(student=rng.randint(0, 1), epoch=rng.randint(1, 3), epochs=3,
                          metrics={"v": rng.random()})
            elif kind < 0.6:
                e = StudentFinished(student=rng.randint(0, 1), checkpoint="c")
            elif kind < 0.68:
                e = Trial(trial_id=rng.choice("ab"), metrics={"training_iteration": rng.randint(1, 3)},
                          done=rng.random() < 0.3)
            elif kind < 0.75:
                e = StageStarted(stage=rng.choice(["teachers", "students"]))
            elif kind < 0.85:
                e = StageFinished(stage=rng.choice(["teachers", "students"]), seconds=1.0)
            elif kind < 0.93:
                e = JobFinished(result="result.json", seconds=1.0)
            else:
                e = JobFailed(kind=rng.choice(["bug", "cancelled"]), message="m")
            events.append(parse_event(json.loads(e.model_copy(update={"seq": seq, "job_id": "j"})
                                                 .model_dump_json())))
        sid, attempts, alive = rng.choice(["s", "s.r1"]), rng.randint(1, 3), rng.choice([True, False, None])
        tracker = AttemptTracker(sid, attempts)
        for e in events:
            tracker.feed(e)
        mine, status, began = _old_follow_view(events, sid, attempts, alive)
        assert tracker.mine == mine, events
        if mine:
            fields = tracker.fields()
            assert (fields["stage"], fields["progress"], fields["latest_metrics"], fields["started_at"]) == (
                status.stage, pytest.approx(status.progress), status.latest_metrics, began), events
            assert tracker.state(alive) == (status.state, status.error), events


# 3: a hung Ray freezes nothing -----------------------------------------------------------






