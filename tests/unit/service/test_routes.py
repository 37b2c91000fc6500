"""The job routes that change a job (submit, cancel, retry, delete, logs), through the app factory
with a real SQLite store and :class:`tests.helpers.fake_ray.FakeRay` for Ray's job API.

The same routes over real HTTP with a real Ray: ``tests/e2e/service/test_rest_api.py``.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from raykd.service.settings import Settings
from tests.helpers.fake_ray import HEADERS, post_job


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


def test_a_job_id_whose_directory_exists_without_a_job_is_refused(
    app: Any, settings: Settings
) -> None:
    client, _, _ = app
    (settings.storage / "stale").mkdir(parents=True)
    r = post_job(client, job_id="stale")
    assert r.status_code == 409
    assert "not available" in r.json()["detail"] and "stale" in r.json()["detail"]  # not saying why
    assert post_job(client, job_id="fresh").status_code == 201
    assert post_job(client, job_id="fresh").status_code == 200  # the same job again, idempotent


def test_a_cancel_during_the_submit_never_answers_cancelled_for_a_submitted_job(app: Any) -> None:
    client, ray, state = app
    assert post_job(client, job_id="race").status_code == 201
    ray.submit_gate = threading.Event()
    submitter = threading.Thread(target=state.scheduler.start_queued)
    submitter.start()
    assert ray.in_submit.wait(5)
    answer: dict[str, Any] = {}
    canceller = threading.Thread(
        target=lambda: answer.update(r=client.post("/api/v1/jobs/race/cancel", headers=HEADERS))
    )
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


def test_generated_job_ids_are_ones_the_driver_accepts(app: Any) -> None:
    from raykd.core.job_id import JOB_ID

    client, _, _ = app
    for name in ("_exp", "-x", ".hidden", "ok"):
        r = post_job(client, name=name)
        assert r.status_code == 201, r.text
        assert JOB_ID.match(r.json()["id"]), r.json()["id"]
    assert post_job(client, job_id="_bad").status_code == 422


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
    reader = threading.Thread(
        target=lambda: got.update(r=client.get("/api/v1/jobs/slow/logs", headers=HEADERS))
    )
    reader.start()
    time.sleep(0.3)
    assert client.get("/healthz").status_code == 200
    other_answered.set()
    release.set()
    reader.join(10)
    assert got["r"].text == "done\n"
    assert seen == [True]  # /healthz was answered while the log request waited on Ray


def test_retry_clears_the_previous_attempts_results(app: Any) -> None:
    client, _, state = app
    assert post_job(client, job_id="again").status_code == 201
    state.store.update(
        "again",
        state="succeeded",
        result={"file": "result.json"},
        progress=1.0,
        stage="students",
        latest_metrics={"val_accuracy": 0.9},
        started_at=5.0,
        finished_at=9.0,
        attempts=1,
        submission_id="again",
    )
    r = client.post("/api/v1/jobs/again/retry", headers=HEADERS)
    assert r.status_code == 200
    body = r.json()
    assert (
        body["state"],
        body["result"],
        body["progress"],
        body["stage"],
        body["latest_metrics"],
        body["started_at"],
        body["finished_at"],
    ) == ("queued", None, 0.0, None, {}, None, None)


def test_following_a_log_streams_it_from_rays_tail_api_not_a_whole_fetch_per_second(
    app: Any,
) -> None:
    client, ray, state = app
    assert post_job(client, job_id="lg").status_code == 201
    state.store.update("lg", state="succeeded", attempts=1, submission_id="lg")
    ray.log_chunks["lg"] = ["a\n", "b\n", "c\n"]
    r = client.get("/api/v1/jobs/lg/logs", params={"follow": "true", "offset": 2}, headers=HEADERS)
    assert r.status_code == 200 and r.text == "b\nc\n"
    assert ray.called("tail") == [("tail", "lg")] and len(ray.called("logs")) <= 1  # one last look


def test_a_followed_log_whose_job_is_retried_meanwhile_goes_on_with_the_new_attempts_log(
    app: Any,
) -> None:
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


def test_a_student_trained_in_the_driver_is_refused_by_the_service(app: Any) -> None:
    """The service's drivers run beside its Ray head: a student there would train outside
    Ray's CPU and memory accounting and the service's limits, so ``student_runner: driver``
    is refused in one line (``auto`` picks the student actor on the service's cluster)."""
    from tests.helpers.specs import digits_spec

    client, _, _ = app
    spec = digits_spec("/unused", scaling={"num_workers": 1, "student_runner": "driver"})
    refused = client.post("/api/v1/jobs", json={"spec": spec}, headers=HEADERS)
    assert refused.status_code == 422, refused.text
    assert "scaling.student_runner='driver' trains the students in the job's driver process" \
        in refused.text and "'auto'" in refused.text
    spec["scaling"]["student_runner"] = "auto"
    assert client.post("/api/v1/jobs", json={"spec": spec}, headers=HEADERS).status_code == 201
