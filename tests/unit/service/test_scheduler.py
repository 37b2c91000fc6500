"""The scheduler (raykd.service.scheduler) and RayJobs, on a real SQLite store.

Ray's job API is a small stand-in here (:class:`tests.helpers.fake_ray.FakeRay`: programmed answers, recorded
calls) so that the orderings that matter can be staged: an attempt that died before its
first event, a submission id Ray already holds, Ray away (the routes that change a job:
``test_routes.py``). Ray itself is exercised by ``tests/e2e/service/test_rest_api.py``'s live tests.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from raykd.core.events import (
    SUBMISSION_ENV,
    JobFailed,
    JobStarted,
    read_events,
)
from raykd.core.jobdir import JobLayout
from raykd.service.ray_jobs import RayJobs, RayRefused, RayUnavailable
from raykd.service.settings import Settings
from raykd.service.store import Store
from tests.helpers.fake_ray import FakeRay, add_job, finished, make_scheduler, started, write_events
from tests.helpers.specs import digits_spec

# 1 --------------------------------------------------------------------------------------


def test_the_followed_attempt_is_the_one_whose_submission_id_the_driver_recorded(
        settings: Settings, store: Store) -> None:
    """Attempt 1 died before open_job: the retry's driver writes attempt=1, the row says 2."""
    ray = FakeRay()
    add_job(store, "j", state="pending", attempts=2, submission_id="j.r1")
    ray.states["j.r1"] = "RUNNING"
    write_events(settings, "j", started(1, "j.r1"))
    sched = make_scheduler(settings, store, ray)
    sched.tick()
    assert store.get("j").state == "running"  # type: ignore[union-attr]
    write_events(settings, "j", finished())
    ray.states["j.r1"] = "SUCCEEDED"
    sched.tick()
    row = store.get("j")
    assert row is not None and (row.state, row.error) == ("succeeded", None)


def test_an_earlier_attempts_events_do_not_decide_this_attempt(settings: Settings, store: Store) -> None:
    """More job_started lines than the row's attempts: the old job_failed is not this attempt's."""
    ray = FakeRay()
    add_job(store, "k", state="pending", attempts=1, submission_id="k")
    ray.states["k"] = "PENDING"
    write_events(settings, "k", started(1, "other"), JobFailed(kind="bug", message="old"),
                 started(2, None), JobFailed(kind="bug", message="old too"))
    make_scheduler(settings, store, ray).tick()
    row = store.get("k")
    assert row is not None and (row.state, row.error) == ("pending", None)


def test_the_submission_id_reaches_the_driver_and_its_job_started(
        settings: Settings, store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ray = FakeRay()
    add_job(store, "s")
    make_scheduler(settings, store, ray, paused=False).tick()
    assert ray.called("submit") == [("submit", "s", "s", {SUBMISSION_ENV: "s",
                                                          "RAYKD_DATA_ROOTS": "[]"})]

    from raykd.core.spec import JobSpec
    from raykd.engine.context import open_job

    monkeypatch.setenv(SUBMISSION_ENV, "s.r3")
    job = open_job(JobSpec.model_validate(digits_spec(str(tmp_path / "runs"))), job_id="s")
    first = read_events(job.job_dir / JobLayout.EVENTS)[0]
    assert isinstance(first, JobStarted) and first.submission_id == "s.r3"


# 2 --------------------------------------------------------------------------------------


def test_a_submission_id_ray_already_holds_fails_that_job_and_the_queue_moves_on(
        settings: Settings, store: Store) -> None:
    ray = FakeRay()
    ray.states["nightly"] = "SUCCEEDED"  # a deleted job's record, still in Ray
    add_job(store, "nightly", created_at=1.0)
    add_job(store, "after", created_at=2.0)
    make_scheduler(settings, store, ray, paused=False, max_running=1).tick()
    row = store.get("nightly")
    assert row is not None and row.state == "failed"
    assert "'nightly'" in (row.error or "") and "already exists" in (row.error or "")
    assert "retry" in (row.error or "") and "ray job delete nightly" in (row.error or "")
    assert store.get("after").state == "pending"  # type: ignore[union-attr]


def test_ray_unreachable_keeps_the_job_waiting(settings: Settings, store: Store) -> None:
    ray = FakeRay()
    ray.down = True
    add_job(store, "w")
    sched = make_scheduler(settings, store, ray, paused=False)
    sched.tick()
    row = store.get("w")  # Ray may or may not have taken it: the same submission id is asked again
    assert row is not None and row.state == "submitting" and (row.note or "").startswith("waiting")
    ray.down = False
    sched.tick()
    row = store.get("w")
    assert row is not None and (row.state, row.submission_id, row.attempts) == ("pending", "w", 1)
    assert [c[1] for c in ray.called("submit")] == ["w", "w"]


class _RaisingClient:
    def __init__(self, err: Exception) -> None:
        self.err = err

    def __getattr__(self, name: str) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            raise self.err
        return call


@pytest.mark.parametrize(("err", "expected"), [
    (RuntimeError("Request failed with status code 400: Traceback (most recent call last):\n  ...\n"
                  "ValueError: Job with submission_id x already exists. Please use a different "
                  "submission_id.\n."), RayRefused),
    (RuntimeError("Request failed with status code 500: No available agent to submit job."), RayUnavailable),
    (ConnectionError("Failed to connect to Ray at address: http://127.0.0.1:1."), RayUnavailable),
])
def test_ray_jobs_tells_a_refusal_from_ray_being_away(err: Exception, expected: type) -> None:
    ray = RayJobs("http://127.0.0.1:1")
    ray._client = _RaisingClient(err)
    with pytest.raises(expected) as caught:
        ray.submit(submission_id="x", spec_path=Path("/s.json"), job_id="x", env={})
    if expected is RayRefused:
        assert str(caught.value).startswith("ValueError: Job with submission_id x already exists")
    ray._client = _RaisingClient(ConnectionError("refused"))
    for call in (lambda: ray.stop("x"), lambda: ray.status("x"), lambda: ray.delete("x")):
        with pytest.raises(RayUnavailable):
            call()


# the routes ---------------------------------------------------------------------------








# 3 --------------------------------------------------------------------------------------




# 5 --------------------------------------------------------------------------------------




# 6 --------------------------------------------------------------------------------------


def test_an_error_before_open_job_is_reported_from_the_driver_log(settings: Settings, store: Store) -> None:
    ray = FakeRay()
    add_job(store, "e", state="pending", attempts=1, submission_id="e")
    ray.states["e"] = "FAILED"
    ray.log_text["e"] = "starting\nerror: spec.json: train.epochs: Input should be >= 1\n"
    make_scheduler(settings, store, ray).tick()
    row = store.get("e")
    assert row is not None and row.state == "failed"
    assert "failed before it started" in (row.error or "")
    assert "train.epochs: Input should be >= 1" in (row.error or "")
    assert "crashed" not in (row.error or "")




# 9 --------------------------------------------------------------------------------------


def test_one_jobs_error_does_not_stop_the_others_being_followed(settings: Settings, store: Store) -> None:
    ray = FakeRay()
    add_job(store, "bad", state="running", attempts=1, submission_id="bad")
    add_job(store, "good", state="running", attempts=1, submission_id="good")
    ray.broken.add("bad")
    ray.states["good"] = "SUCCEEDED"
    write_events(settings, "good", started(1, "good"), finished())
    make_scheduler(settings, store, ray).tick()
    assert store.get("good").state == "succeeded"  # type: ignore[union-attr]
    assert store.get("bad").state == "running"  # type: ignore[union-attr]


# 12 -------------------------------------------------------------------------------------






# 15 -------------------------------------------------------------------------------------




# issue 19, item 10 ----------------------------------------------------------------------






# artifacts: what is sent is the file that was checked ---------------------------------------






