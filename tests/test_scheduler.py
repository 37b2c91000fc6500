"""The scheduler and the job routes that change a job, on a real SQLite store.

Ray's job API is a small stand-in here (:class:`FakeRay`: programmed answers, recorded
calls) so that the orderings that matter can be staged: an attempt that died before its
first event, a submission id Ray already holds, a cancel during a submit, Ray away. Ray
itself is exercised by ``tests/test_service.py``'s live tests.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from raykd.core.events import (
    SUBMISSION_ENV,
    JobFailed,
    JobFinished,
    JobStarted,
    JsonlSink,
    read_events,
)
from raykd.core.jobdir import JobLayout
from raykd.service.app import create_app
from raykd.service.artifacts import open_artifact
from raykd.service.ray_jobs import RayJobs, RayRefused, RayUnavailable
from raykd.service.scheduler import Scheduler
from raykd.service.settings import Settings
from raykd.service.store import Store, migrate
from raykd.service.tables import JobRow
from tests.conftest import digits_spec

TOKEN = "scheduler-test-admin-token-0123456789"
HEADERS = {"Authorization": f"Bearer {TOKEN}"}


class FakeRay:
    """Ray's job API as the scheduler sees it: answers from ``states``, every call recorded."""

    def __init__(self) -> None:
        self.states: dict[str, str] = {}  # submission id -> PENDING/RUNNING/SUCCEEDED/FAILED/STOPPED
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

    def submit(self, *, submission_id: str, spec_path: Path, job_id: str, env: dict[str, str],
               owner: str | None = None) -> str:
        self.calls.append(("submit", submission_id, job_id, dict(env)))
        self.owners[submission_id] = owner
        self.in_submit.set()
        if self.submit_gate is not None:
            self.submit_gate.wait(10)
        self._check()
        if submission_id in self.states:
            raise RayRefused(f"Job with submission_id {submission_id} already exists. "
                             "Please use a different submission_id.")
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


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(token=TOKEN, storage=tmp_path / "storage", paused=True,  # type: ignore[arg-type]
                    ray_address="http://127.0.0.1:1", poll_s=0.2)


@pytest.fixture
def store(settings: Settings) -> Store:
    settings.storage.mkdir(parents=True, exist_ok=True)
    migrate(settings.db_url())
    return Store(settings.db_url())


def make_scheduler(settings: Settings, store: Store, ray: FakeRay, **changes: Any) -> Scheduler:
    return Scheduler(settings.model_copy(update=changes), store, ray)  # type: ignore[arg-type]


def add_job(store: Store, job_id: str, **fields: Any) -> JobRow:
    row = JobRow(id=job_id, name="test", kind="run", owner="admin", state="queued", priority=0,
                 spec={"name": "test"}, idempotency_key=None, created_at=time.time(), latest_metrics={},
                 attempts=0, progress=0.0, last_seq=0, cancel_requested=False)
    for k, v in fields.items():
        setattr(row, k, v)
    return store.add(row, {})


def write_events(settings: Settings, job_id: str, *events: Any) -> None:
    (settings.storage / job_id).mkdir(parents=True, exist_ok=True)
    sink = JsonlSink(settings.storage / job_id / JobLayout.EVENTS, job_id)
    for e in events:
        sink.emit(e)


def started(attempt: int, submission_id: str | None) -> JobStarted:
    return JobStarted(name="test", spec_hash="x", attempt=attempt, total_epochs=1, students=1,
                      submission_id=submission_id)


def finished() -> JobFinished:
    return JobFinished(result="result.json", seconds=1.0)


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


@pytest.fixture
def app(settings: Settings) -> Iterator[tuple[TestClient, FakeRay, Any]]:
    ray = FakeRay()
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        state = client.app.state.raykd  # type: ignore[attr-defined]
        state.scheduler.stop()  # the tests tick it themselves, in the order they stage
        state.ray = state.scheduler.ray = state.scheduler.follower.ray = ray
        yield client, ray, state


def post_job(client: TestClient, **body: Any) -> Any:
    return client.post("/api/v1/jobs", json={"spec": digits_spec("/unused"), **body}, headers=HEADERS)


def test_delete_forgets_the_jobs_submissions_in_ray_so_its_id_can_be_reused(app: Any) -> None:
    client, ray, state = app
    assert post_job(client, job_id="nightly").status_code == 201
    state.store.update("nightly", state="succeeded", attempts=2, submission_id="nightly.r1")
    ray.states.update({"nightly": "FAILED", "nightly.r1": "SUCCEEDED"})
    assert client.delete("/api/v1/jobs/nightly", headers=HEADERS).status_code == 204
    assert ray.called("delete") == [("delete", "nightly"), ("delete", "nightly.r1")]
    assert post_job(client, job_id="nightly").status_code == 201
    state.scheduler.submit(state.store.get("nightly"))
    assert state.store.get("nightly").state == "pending"


# 3 --------------------------------------------------------------------------------------


def test_a_job_id_whose_directory_exists_without_a_job_is_refused(app: Any, settings: Settings) -> None:
    client, _, _ = app
    (settings.storage / "stale").mkdir(parents=True)
    r = post_job(client, job_id="stale")
    assert r.status_code == 409
    assert "not available" in r.json()["detail"] and "stale" in r.json()["detail"]  # not saying why
    assert post_job(client, job_id="fresh").status_code == 201
    assert post_job(client, job_id="fresh").status_code == 200  # the same job again, idempotent


# 5 --------------------------------------------------------------------------------------


def test_a_cancel_during_the_submit_never_answers_cancelled_for_a_submitted_job(app: Any) -> None:
    client, ray, state = app
    assert post_job(client, job_id="race").status_code == 201
    ray.submit_gate = threading.Event()
    submitter = threading.Thread(target=state.scheduler.start_queued)
    submitter.start()
    assert ray.in_submit.wait(5)
    answer: dict[str, Any] = {}
    canceller = threading.Thread(target=lambda: answer.update(
        r=client.post("/api/v1/jobs/race/cancel", headers=HEADERS)))
    canceller.start()
    time.sleep(0.5)  # the cancel is in flight while Ray takes the submission
    ray.submit_gate.set()
    submitter.join(10)
    canceller.join(10)
    assert answer["r"].status_code == 200
    row = state.store.get("race")
    if answer["r"].json()["state"] == "cancelled":
        assert row.state == "cancelled" and row.submission_id is None
    else:  # submitted first: the cancel stopped it in Ray
        assert row.cancel_requested and ray.called("stop") == [("stop", "race")]


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


def test_generated_job_ids_are_ones_the_driver_accepts(app: Any) -> None:
    from raykd.core.job_id import JOB_ID

    client, _, _ = app
    for name in ("_exp", "-x", ".hidden", "ok"):
        r = post_job(client, name=name)
        assert r.status_code == 201, r.text
        assert JOB_ID.match(r.json()["id"]), r.json()["id"]
    assert post_job(client, job_id="_bad").status_code == 422


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


def test_cancel_while_ray_is_away_is_503_and_recorded_then_done_when_ray_is_back(app: Any) -> None:
    client, ray, state = app
    assert post_job(client, job_id="c").status_code == 201
    state.store.update("c", state="running", attempts=1, submission_id="c")
    ray.states["c"] = "RUNNING"
    ray.down = True
    r = client.post("/api/v1/jobs/c/cancel", headers=HEADERS)
    assert r.status_code == 503 and "cancel is recorded" in r.json()["detail"]
    assert state.store.get("c").cancel_requested
    ray.down = False
    ray.calls.clear()
    state.scheduler.follower.follow(state.store.get("c"))
    assert ray.called("stop") == [("stop", "c")]
    ray.states["c"] = "STOPPED"
    state.scheduler.follower.follow(state.store.get("c"))
    assert state.store.get("c").state == "cancelled"


def test_a_slow_ray_log_request_does_not_block_the_server(app: Any) -> None:
    client, ray, state = app
    assert post_job(client, job_id="slow").status_code == 201
    state.store.update("slow", state="running", submission_id="slow")
    release, other_answered = threading.Event(), threading.Event()
    seen: list[bool] = []

    def slow_logs(submission_id: str) -> str:  # Ray taking its time (up to the SDK's timeout)
        release.wait(5)
        seen.append(other_answered.is_set())
        return "done\n"

    ray.logs = slow_logs
    got: dict[str, Any] = {}
    reader = threading.Thread(target=lambda: got.update(r=client.get("/api/v1/jobs/slow/logs", headers=HEADERS)))
    reader.start()
    time.sleep(0.3)
    assert client.get("/healthz").status_code == 200
    other_answered.set()
    release.set()
    reader.join(10)
    assert got["r"].text == "done\n"
    assert seen == [True]  # /healthz was answered while the log request waited on Ray


# 15 -------------------------------------------------------------------------------------


def test_retry_clears_the_previous_attempts_results(app: Any) -> None:
    client, _, state = app
    assert post_job(client, job_id="again").status_code == 201
    state.store.update("again", state="succeeded", result={"file": "result.json"}, progress=1.0,
                       stage="students", latest_metrics={"val_accuracy": 0.9}, started_at=5.0,
                       finished_at=9.0, attempts=1, submission_id="again")
    r = client.post("/api/v1/jobs/again/retry", headers=HEADERS)
    assert r.status_code == 200
    body = r.json()
    assert (body["state"], body["result"], body["progress"], body["stage"], body["latest_metrics"],
            body["started_at"], body["finished_at"]) == ("queued", None, 0.0, None, {}, None, None)


# issue 19, item 10 ----------------------------------------------------------------------


def test_following_a_log_streams_it_from_rays_tail_api_not_a_whole_fetch_per_second(app: Any) -> None:
    client, ray, state = app
    assert post_job(client, job_id="lg").status_code == 201
    state.store.update("lg", state="succeeded", attempts=1, submission_id="lg")
    ray.log_chunks["lg"] = ["a\n", "b\n", "c\n"]
    r = client.get("/api/v1/jobs/lg/logs", params={"follow": "true", "offset": 2}, headers=HEADERS)
    assert r.status_code == 200 and r.text == "b\nc\n"
    assert ray.called("tail") == [("tail", "lg")] and len(ray.called("logs")) <= 1  # one last look


def test_a_followed_log_whose_job_is_retried_meanwhile_goes_on_with_the_new_attempts_log(app: Any) -> None:
    """The polling after Ray's stream ends used the row of the request's start: a job retried
    meanwhile was polled under its old submission id (and a byte offset of another log)."""
    client, ray, state = app
    assert post_job(client, job_id="rt").status_code == 201
    state.store.update("rt", state="running", attempts=1, submission_id="rt")
    ray.log_text["rt.r1"] = "the retry's log\n"

    async def first_attempt_ends(submission_id: str) -> Any:  # the stream ends as the retry starts
        ray.calls.append(("tail", submission_id))
        state.store.update("rt", state="succeeded", attempts=2, submission_id="rt.r1")
        if False:
            yield ""

    ray.tail = first_attempt_ends
    r = client.get("/api/v1/jobs/rt/logs", params={"follow": "true"}, headers=HEADERS)
    assert r.status_code == 200 and r.text == "the retry's log\n", r.text
    assert ("logs", "rt.r1") in ray.calls and ("logs", "rt") not in ray.calls


# artifacts: what is sent is the file that was checked ---------------------------------------


def test_an_artifact_is_sent_from_the_file_opened_and_a_planted_link_is_refused(
        app: Any, settings: Settings, tmp_path: Path) -> None:
    """A download opens the file once, without following links: a listed name that is a link
    to a file outside the job is 404 with the reason; real files (nested too) come whole."""
    client, _, _ = app
    assert post_job(client, job_id="linked").status_code == 201
    root = settings.storage / "linked"
    (root / "students").mkdir(parents=True)
    (root / "result.json").write_text('{"mine": true}')
    (root / "students" / "s.safetensors").write_bytes(b"weights" * 1000)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.json").write_text('{"secret": "outside the job"}')
    (root / "leak.json").symlink_to(outside / "secret.json")
    base = "/api/v1/jobs/linked/artifacts"
    (root / "linked-dir").symlink_to(outside, target_is_directory=True)
    listed = {a["path"] for a in client.get(base, headers=HEADERS).json()}
    assert {"result.json", "students/s.safetensors"} <= listed
    assert not {"leak.json", "linked-dir/secret.json"} & listed  # no name or size of a target
    got = client.get(f"{base}/result.json", headers=HEADERS)
    assert (got.status_code, got.content) == (200, b'{"mine": true}')
    assert got.headers["content-disposition"] == 'attachment; filename="result.json"'
    got = client.get(f"{base}/students/s.safetensors", headers=HEADERS)
    assert (got.status_code, got.content) == (200, b"weights" * 1000)
    leak = client.get(f"{base}/leak.json", headers=HEADERS)
    assert leak.status_code == 404 and b"outside the job" not in leak.content
    assert leak.json()["detail"].startswith("no artifact 'leak.json' in job 'linked'")


def test_a_directory_swapped_for_a_link_after_the_listing_is_not_followed(tmp_path: Path) -> None:
    """The race the listing cannot see: ``students/`` checked, then replaced by a link to a
    directory outside the job. Opening refuses it; a file opened before the swap stays the
    one that was checked."""
    root, outside = tmp_path / "job", tmp_path / "outside"
    (root / "students").mkdir(parents=True)
    outside.mkdir()
    (root / "students" / "s.safetensors").write_bytes(b"the job's")
    (outside / "s.safetensors").write_bytes(b"someone else's")
    opened = open_artifact(root, "students/s.safetensors")
    (root / "students").rename(root / "moved")
    (root / "students").symlink_to(outside, target_is_directory=True)
    try:
        assert os.read(opened, 100) == b"the job's"
    finally:
        os.close(opened)
    with pytest.raises(OSError):
        open_artifact(root, "students/s.safetensors")
    os.mkfifo(root / "pipe.json")  # never blocks the request waiting for a writer
    for bad in ("pipe.json", "moved", "../outside/s.safetensors", "moved/../moved/s.safetensors"):
        with pytest.raises(OSError):
            open_artifact(root, bad)
    assert os.read(fd := open_artifact(root, "moved/s.safetensors"), 100) == b"the job's"
    os.close(fd)


def test_a_sweeps_summary_names_what_ranked_its_trials(tmp_path: Path) -> None:
    """The API's result summary of a span sweep says its trials were ranked by SQuAD val F1."""
    import json

    from raykd.service.follower import result_summary

    sweep = {"metric": "val_f1", "best": {"trial_id": "a"}}
    (tmp_path / "sweep.json").write_text(json.dumps(sweep))
    summary = result_summary(tmp_path)
    assert summary is not None and summary["metric"] == "val_f1" and summary["file"] == "sweep.json"
