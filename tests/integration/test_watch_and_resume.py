"""Jobs that can be watched from outside and resumed (issue 9), on a real local Ray.

A reader tails ``events.jsonl`` while a job runs; the status comes from the events alone;
a finished job id reruns without training; a driver killed after its first student is
resumed by running the same id again, which trains only the rest; a student worker killed
mid-training restarts from its last epoch's checkpoint.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from raykd.cli import app
from raykd.core.events import follow, read_events
from raykd.core.faults import ALLOW_ENV
from raykd.core.jobdir import JobLayout
from raykd.core.spec import SpecError, parse_spec
from raykd.core.status import job_status
from raykd.engine import run_job
from tests.helpers.specs import digits_spec

pytestmark = pytest.mark.ray
EPOCHS = 3


@pytest.fixture(scope="module")
def storage(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("jobs")


def spec_for(storage: Path, **overrides: Any) -> dict[str, Any]:
    base = {"train": {"epochs": EPOCHS, "batch_size": 64, "lr": 0.003},
            "methods": [{"method": "none"}, {"method": "kd"}]}
    return digits_spec(str(storage), **{**base, **overrides})


def types(events: list[Any]) -> list[str]:
    return [e.type for e in events]


@pytest.mark.slow
def test_events_are_tailed_live_and_a_finished_id_reruns_without_training(ray_local: None,
                                                                          storage: Path) -> None:
    spec = parse_spec(spec_for(storage))
    path = storage / "watched" / JobLayout.EVENTS
    seen: list[Any] = []
    done = threading.Event()

    def tail() -> None:
        while not path.exists() and not done.is_set():
            time.sleep(0.05)
        seen.extend(follow(path, poll_s=0.05, stop=done.is_set))

    reader = threading.Thread(target=tail)
    reader.start()
    try:
        first = run_job(spec, job_id="watched", log=lambda _: None)
    finally:
        done.set()
        reader.join(timeout=30)
    # the reader saw the whole stream while it was written: numbered 1..N, in order
    assert [e.seq for e in seen] == list(range(1, len(seen) + 1))
    assert seen[0].type == "job_started" and seen[-1].type == "job_finished"
    kinds = types(seen)
    assert kinds.index("teacher_ready") < kinds.index("epoch") < kinds.index("student_finished")
    for student in (0, 1):
        epochs = [e.epoch for e in seen if e.type == "epoch" and e.student == student]
        assert epochs == list(range(1, EPOCHS + 1))
    stages = [e.stage for e in seen if e.type == "stage_started"]
    assert stages[:3] == ["data", "ray_init", "teacher_start"] and "students" in stages
    status = job_status(read_events(path))
    assert status.state == "succeeded" and status.progress == 1.0 and status.job_id == "watched"

    # the same id and spec again: the stored result, no teacher and no student trained
    again = run_job(spec, job_id="watched", log=lambda _: None)
    assert again == first
    second = [e for e in read_events(path) if e.seq > seen[-1].seq]
    assert types(second)[0] == "job_started" and second[0].attempt == 2
    assert "epoch" not in types(second) and "teacher_ready" not in types(second)
    assert types(second)[-1] == "job_finished"


@pytest.mark.slow
def test_the_same_id_with_another_spec_is_refused(ray_local: None, storage: Path, tmp_path: Path) -> None:
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump(spec_for(storage, train={"epochs": 1, "batch_size": 64, "lr": 0.01})))
    result = CliRunner().invoke(app, ["run", str(other), "--job-id", "watched"])
    assert result.exit_code == 2, result.output
    assert "was started from a different spec" in result.output and "Traceback" not in result.output
    bad = CliRunner().invoke(app, ["run", str(other), "--job-id", "../escape"])
    assert bad.exit_code == 2 and "is not a valid job id" in bad.output


def _wait_for(path: Path, predicate: Any, timeout: float) -> list[Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        events = read_events(path)
        if predicate(events):
            return events
        time.sleep(0.2)
    raise AssertionError(f"timed out; events so far: {types(read_events(path))}")


@pytest.mark.slow
def test_a_killed_driver_is_resumed_by_its_job_id(ray_local: None, storage: Path, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import ray

    # A pause after each epoch keeps student 1 training for >= 3 s after student 0 finished,
    # so the kill lands mid-job: unpaused, the driver could finish first (a CI flake).
    monkeypatch.setenv(ALLOW_ENV, "1")
    spec = spec_for(storage, name="resumable", faults={"epoch_sleep_s": 1.0})
    path_spec = tmp_path / "spec.yaml"
    path_spec.write_text(yaml.safe_dump(spec))
    env = {**os.environ, "RAY_ADDRESS": ray.get_runtime_context().gcs_address, "RAY_AUTH_MODE": "token"}
    driver = subprocess.Popen([sys.executable, "-m", "raykd", "run", str(path_spec), "--job-id", "killed"],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    events_path = storage / "killed" / JobLayout.EVENTS
    try:
        _wait_for(events_path, lambda ev: any(e.type == "student_finished" for e in ev), timeout=240)
    finally:
        driver.send_signal(signal.SIGKILL)
        driver.wait(timeout=30)
    before = read_events(events_path)
    assert job_status(before).state == "running"  # the events alone cannot know...
    died = job_status(before, process_alive=False)  # ...the control plane tells it
    assert died.state == "failed" and "run the same job id again" in (died.error or "")

    result = run_job(parse_spec(spec), job_id="killed", log=lambda _: None)
    after = [e for e in read_events(events_path) if e.seq > before[-1].seq]
    assert after[0].type == "job_started" and after[0].attempt == 2
    reused = [e for e in after if e.type == "student_finished" and e.reused]
    assert [e.student for e in reused] == [0]  # student 0 was taken from disk...
    assert not [e for e in after if e.type == "epoch" and e.student == 0]  # ...not retrained
    trained = [e.epoch for e in after if e.type == "epoch" and e.student == 1]
    done_before = [e.epoch for e in before if e.type == "epoch" and e.student == 1]
    assert sorted(done_before + trained) == list(range(1, EPOCHS + 1))  # every epoch exactly once
    assert [len(s["generations"][0]["history"]) for s in result["students"]] == [EPOCHS, EPOCHS]
    assert job_status(read_events(events_path)).state == "succeeded"
    assert not any(t["trained_by_raykd"] for t in result["teachers"])


HOLDER = """
import sys
from raykd.engine.context import open_job
from raykd.core.spec import parse_spec
import yaml
job = open_job(parse_spec(yaml.safe_load(open(sys.argv[1]))), job_id=sys.argv[2], log=lambda _: None)
print("holding", flush=True)
sys.stdin.read()  # a driver at work, until the test kills it
"""


def test_a_second_driver_of_a_running_job_id_is_refused_naming_the_holder(tmp_path: Path) -> None:
    """Two real processes: one driver holds the job; a second `raykd run` of that id gets a
    one-line error naming it (pid, host, since) and writes nothing; the lock dies with it."""
    import socket

    from raykd.core.driver_lock import DriverLock
    from raykd.core.errors import JobDirError

    path_spec = tmp_path / "spec.yaml"
    path_spec.write_text(yaml.safe_dump(spec_for(tmp_path / "runs", name="twice")))
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(path_spec), "twice"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "holding"
        events_path = tmp_path / "runs" / "twice" / JobLayout.EVENTS
        before = events_path.read_bytes()
        second = subprocess.run([sys.executable, "-m", "raykd", "run", str(path_spec), "--job-id", "twice"],
                                capture_output=True, text=True, timeout=120)
        assert second.returncode == 2, second.stdout + second.stderr
        error = [line for line in (second.stdout + second.stderr).splitlines() if "already running" in line]
        assert len(error) == 1 and "Traceback" not in second.stderr, second.stdout + second.stderr
        assert f"pid {holder.pid} on host {socket.gethostname()} since 20" in error[0]
        assert events_path.read_bytes() == before  # the refused driver wrote no event
        with pytest.raises(JobDirError, match=f"pid {holder.pid}"):
            DriverLock(events_path.parent, "twice")
    finally:
        holder.kill()
        holder.wait(timeout=30)
    DriverLock(events_path.parent, "twice").release()  # its process gone, the lock is free


@pytest.mark.slow
@pytest.mark.parametrize(("runner", "fault"), [
    ("actor", {"kill_student_after_epoch": 2}), ("train", {"kill_student_after_epoch": 2}),
    ("actor", {"kill_student_at_step": 25})])  # ~17 steps an epoch: in the middle of epoch 2
def test_a_killed_student_worker_restarts_from_its_checkpoint(ray_local: None, storage: Path,
                                                              monkeypatch: pytest.MonkeyPatch,
                                                              runner: str, fault: dict[str, int]) -> None:
    monkeypatch.setenv(ALLOW_ENV, "1")
    name = f"faulty-{runner}-{next(iter(fault))}"
    spec = parse_spec(spec_for(storage, name=name, methods=[{"method": "kd"}],
                               train={"epochs": 4, "batch_size": 64, "lr": 0.003},
                               scaling={"num_workers": 1, "student_runner": runner}, faults=fault))
    result = run_job(spec, job_id=name, log=lambda _: None)
    events = read_events(storage / name / JobLayout.EVENTS)
    assert (storage / name / "fault-0-g1.fired").exists()  # the worker really was killed
    assert result["students"][0]["generations"][0]["runner"] == runner
    assert "student_restarted" in types(events)
    epochs = [e.epoch for e in events if e.type == "epoch"]
    assert epochs == [1, 2, 3, 4]  # resumed from epoch 1 or 2: no epoch run twice, none lost
    history = result["students"][0]["generations"][0]["history"]
    assert [h["epoch"] for h in history] == [1, 2, 3, 4]
    # the restart resumed the weights, optimizer and batch order of its checkpoint: every
    # epoch's loss and accuracy are those of the same job undisturbed (fresh weights after
    # the kill would give other numbers), and so are the test accuracy and the saved model
    calm = _undisturbed(storage, runner)
    for key in ("train_loss", "val_accuracy"):
        assert [h[key] for h in history] == [h[key] for h in calm["history"]], key
    assert result["students"][0]["test_accuracy"] == calm["test_accuracy"]


_CALM: dict[str, dict[str, Any]] = {}


def _undisturbed(storage: Path, runner: str) -> dict[str, Any]:
    """The faulty test's job without its fault (run once per runner): its student's history."""
    if runner not in _CALM:
        name = f"calm-{runner}"
        spec = parse_spec(spec_for(storage, name=name, methods=[{"method": "kd"}],
                                   train={"epochs": 4, "batch_size": 64, "lr": 0.003},
                                   scaling={"num_workers": 1, "student_runner": runner}))
        result = run_job(spec, job_id=name, log=lambda _: None)
        assert "student_restarted" not in types(read_events(storage / name / JobLayout.EVENTS))
        _CALM[runner] = {"history": result["students"][0]["generations"][0]["history"],
                         "test_accuracy": result["students"][0]["test_accuracy"]}
    return _CALM[runner]


@pytest.mark.slow
def test_faults_are_refused_unless_allowed(ray_local: None, storage: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ALLOW_ENV, raising=False)
    spec = parse_spec(spec_for(storage, name="no-faults", faults={"kill_teacher": 0}))
    with pytest.raises(SpecError, match=f"fault injection is off here; set {ALLOW_ENV}=1"):
        run_job(spec, job_id="no-faults", log=lambda _: None)
    assert not (storage / "no-faults").exists()  # refused before anything ran or was written


@pytest.mark.slow
def test_a_teacher_killed_after_training_serves_the_same_logits_after_its_restart(
        ray_local: None, storage: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Its first logits request kills teacher 1's actor (right after it trained): Ray
    restarts it from the weights it saved, retries the request, and the job's numbers are
    those of the same job undisturbed. The cache is off, so both train and ask their teachers."""
    monkeypatch.setenv(ALLOW_ENV, "1")
    base = {"methods": [{"method": "kd"}], "cache": {"enabled": False}}
    calm = run_job(parse_spec(spec_for(storage, name="calm", **base)), job_id="calm", log=lambda _: None)
    hit = run_job(parse_spec(spec_for(storage, name="hit", faults={"kill_teacher": 1}, **base)),
                  job_id="hit", log=lambda _: None)
    assert (storage / "hit" / "fault-teacher-1.fired").exists()  # its process really died
    assert all(t["trained_by_raykd"] for t in hit["teachers"])
    assert [t["test_accuracy"] for t in hit["teachers"]] == [t["test_accuracy"] for t in calm["teachers"]]
    assert hit["ensemble"] == calm["ensemble"]
    for key in ("train_loss", "val_accuracy"):  # the student learnt from the same logits
        assert [h[key] for h in hit["students"][0]["generations"][0]["history"]] == [
            h[key] for h in calm["students"][0]["generations"][0]["history"]]


def test_a_student_stopped_after_its_last_epoch_is_finished_from_its_state(tmp_path: Path) -> None:
    """Every epoch saved, ``student_finished`` never written: the rerun publishes, trains nothing.

    (Before, a new Ray Train run was started from that state, had no epoch left to report,
    and failed with "reported no checkpoint" on every retry.)
    """
    from raykd.models import build_model, load_checkpoint, save_checkpoint, weights_hash
    from raykd.train.state import BEST_FILE, PROGRESS_FILE
    from raykd.train.trainer import StudentRun, train_student_ray

    state = tmp_path / "state"
    state.mkdir()
    model = {"name": "mlp", "hidden": [8]}
    best = build_model(model, (1, 8, 8), 10)
    save_checkpoint(best, state / BEST_FILE, config=model, input_shape=(1, 8, 8), num_classes=10)
    history = [{"epoch": e, "val_accuracy": 0.5 + e / 10} for e in (1, 2, 3)]
    (state / PROGRESS_FILE).write_text(json.dumps(
        {"epoch": 3, "step": 30, "history": history, "best_val": 0.8, "best_epoch": 3}))
    run = StudentRun(student=0, generation=1, label="kd", epochs=3, resume_from=str(state))
    out = tmp_path / "students" / "student-0-g1.safetensors"
    result = train_student_ray(None, refs={}, num_workers=2, use_gpu=False,  # type: ignore[arg-type]
                               cpus_per_worker=1.0, storage=tmp_path / "ray_train", name="unused",
                               out=out, run=run)
    assert result.history == history and result.best_epoch == 3 and result.best_val_accuracy == 0.8
    assert weights_hash(load_checkpoint(out)) == weights_hash(best)
    assert not (tmp_path / "ray_train").exists()  # no trainer was started
