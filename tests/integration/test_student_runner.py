"""Where a job's single-worker students train: the driver's own process (``student_runner:
driver``, what ``auto`` picks on a local Ray the driver started) against the student actor;
all on a real local Ray, and real drivers killed, cancelled and resumed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from raykd.core.events import read_events
from raykd.core.faults import ALLOW_ENV
from raykd.core.jobdir import JobLayout
from raykd.core.spec import SpecError, parse_spec
from raykd.data.splits import DataError
from raykd.engine import run_job
from tests.helpers.specs import digits_spec

EPOCHS = 3
METHODS = [{"method": "none"}, {"method": "kd"}]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One storage (one logit cache) for the module: the first job trains the teachers."""
    return tmp_path_factory.mktemp("student-runner")


def spec_for(store: Path, name: str, **overrides: Any) -> dict[str, Any]:
    return digits_spec(str(store), name=name, **{
        "methods": METHODS, "train": {"epochs": EPOCHS, "batch_size": 64, "lr": 0.003},
        **overrides})


def student_actors() -> set[str]:
    """Ids of every student actor this Ray has seen (dead ones included)."""
    import ray
    from ray.util.state import list_actors

    return {a.actor_id for a in list_actors(
        address=ray.get_runtime_context().gcs_address, limit=10_000,
        filters=[("class_name", "=", "StudentWorker")], raise_on_missing_output=False)}


@pytest.mark.slow
def test_the_driver_trains_exactly_as_the_student_actor_and_auto_picks_it_on_a_local_ray(
        ray_local: None, store: Path) -> None:
    import torch

    torch.set_num_threads(2)  # the driver's own count: the fits (1 CPU each) give it back
    said: list[str] = []
    before = student_actors()
    driver = run_job(parse_spec(spec_for(store, "auto")), job_id="auto", log=said.append)
    assert student_actors() == before  # no student process started
    assert torch.get_num_threads() == 2
    actor = run_job(parse_spec(spec_for(store, "actor", scaling={"student_runner": "actor"})),
                    job_id="actor", log=lambda _: None)
    assert len(student_actors() - before) == 1
    assert (driver["student_runner"], actor["student_runner"]) == ("driver", "actor")
    assert sum("trained in this driver's process" in s for s in said) == 1, said
    for d, a in zip(driver["students"], actor["students"], strict=True):  # the same loop
        gd, ga = d["generations"][0], a["generations"][0]
        assert (gd["runner"], ga["runner"]) == ("driver", "actor")
        assert [h["train_loss"] for h in gd["history"]] == pytest.approx(
            [h["train_loss"] for h in ga["history"]], rel=1e-6)
        assert ([h["val_accuracy"] for h in gd["history"]]
                == [h["val_accuracy"] for h in ga["history"]])
        assert (d["test_accuracy"], gd["best_epoch"]) == (a["test_accuracy"], ga["best_epoch"])
        assert d["test_accuracy"] > 0.8
    t = driver["timings"]
    assert "student_actor_start" not in t and actor["timings"]["student_actor_start"] > 0
    assert t["student_validation"] > 0 and t["student_state_save"] > 0
    states = store / "auto" / "student_states" / "student-1-g1-a1"
    assert sorted(p.name for p in states.iterdir()) == ["epoch-0002", "epoch-0003"]  # newest two
    events = read_events(store / "auto" / JobLayout.EVENTS)
    assert [e.epoch for e in events if e.type == "epoch" and e.student == 1] == [1, 2, 3]


@pytest.mark.slow
def test_auto_trains_on_the_driver_only_where_it_stands_for_the_actor(ray_local: None) -> None:
    from raykd.engine.cluster import ray_started_here, student_runner

    def runner(**overrides: Any) -> str:
        return student_runner(parse_spec(digits_spec("/tmp/unused", **overrides)))

    assert ray_started_here()  # ray_local: ensure_ray started it in this process
    assert runner() == "driver"
    assert runner(scaling={"num_workers": 2}) == "train"
    assert runner(scaling={"student_runner": "actor"}) == "actor"
    assert runner(data={"dataset": "digits", "seed": 0, "augment": True}) == "actor"
    assert runner(faults={"kill_student_after_epoch": 1}) == "actor"  # Ray restarts an actor
    assert runner(faults={"epoch_sleep_s": 0.1}) == "driver"  # a pause kills nothing


JOINED = """
import json, os, ray
from raykd.core.errors import ResourceError
from raykd.core.spec import parse_spec
from raykd.engine.cluster import ensure_ray, ray_started_here, student_runner
from tests.helpers.specs import digits_spec

def runner(**scaling):
    try:
        return student_runner(parse_spec(digits_spec("/tmp/unused", scaling=scaling)))
    except ResourceError as exc:
        return str(exc)

out = {}
ensure_ray()  # RAY_ADDRESS: the test's local Ray, joined
out["joined"] = [ray_started_here(), runner(), runner(student_runner="driver")]
ray.shutdown()
del os.environ["RAY_ADDRESS"]
ray.init(num_cpus=1, num_gpus=1, include_dashboard=False)  # a local Ray with a (fake) GPU
out["gpu"] = [ray_started_here(), runner(), runner(student_runner="driver"),
              runner(student_runner="driver", use_gpu=False)]
ray.shutdown()
print(json.dumps(out))
"""


@pytest.mark.slow
def test_a_joined_cluster_or_a_gpu_keeps_the_student_actor(ray_local: None) -> None:
    """In another process: joined by address, ``auto`` keeps the actor (a driver asked for
    is honoured); on a local Ray with a GPU, ``auto`` keeps the actor and ``driver`` is
    refused in one line, unless the students are told off the GPU."""
    import ray

    root = str(Path(__file__).parents[2])  # raykd and tests/ of this checkout
    env = {**os.environ, "RAY_ADDRESS": ray.get_runtime_context().gcs_address,
           "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", JOINED], env=env, capture_output=True, text=True,
                          timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["joined"] == [False, "actor", "driver"]
    head, auto, refused, cpu = out["gpu"]
    assert (head, auto, cpu) == (True, "actor", "driver")
    assert refused.startswith("scaling.student_runner='driver' trains on the driver's CPU threads, "
                              "but the students use the cluster's GPUs") and "\n" not in refused


def test_the_driver_runner_is_refused_for_ddp_or_gpus_in_one_line() -> None:
    for scaling, what in (({"num_workers": 2}, "trains each student in one process, but "
                                               "scaling.num_workers=2"),
                          ({"use_gpu": True}, "trains on the driver's CPU threads, but "
                                              "scaling.use_gpu is true")):
        with pytest.raises(SpecError) as exc:
            parse_spec(digits_spec("/tmp/x", scaling={"student_runner": "driver", **scaling}))
        assert f"scaling.student_runner='driver' {what}" in str(exc.value)
        assert "\n" not in str(exc.value)


@pytest.mark.slow
def test_nan_teacher_logits_fail_the_driver_runner_with_the_loops_error(
        ray_local: None, tmp_path: Path) -> None:
    import ray

    from raykd.data import load_dataset
    from raykd.train.config import StudentConfig
    from raykd.train.driver import train_student_driver
    from raykd.train.runs import StudentRun

    spec = parse_spec(spec_for(tmp_path, "nan"))
    data = load_dataset("digits", seed=0)
    config = StudentConfig.for_job(spec, data, spec.methods[1], seed=0, label="kd")
    logits = np.zeros((3, len(data.train), data.num_classes), np.float32)
    logits[1, 5, 2] = np.nan
    refs = {"data": {k: ray.put(getattr(data, s).x if k[0] == "x" else getattr(data, s).y)
                     for k, s in (("x_train", "train"), ("y_train", "train"),
                                  ("x_val", "val"), ("y_val", "val"))},
            "teacher_train": ray.put(logits)}
    with pytest.raises(DataError, match="cached logits of teacher 1 contain NaN/inf"):
        train_student_driver(config, refs=refs, storage=tmp_path / "states", name="nan",
                             out=tmp_path / "nan.safetensors",
                             run=StudentRun(student=0, generation=1, label="kd", epochs=EPOCHS))


def _wait_for(path: Path, predicate: Any, proc: subprocess.Popen[bytes], timeout: float) -> None:
    """Until the job's events satisfy ``predicate`` (the driver must still be running)."""
    deadline = time.monotonic() + timeout
    while not (path.is_file() and predicate(read_events(path))):
        assert proc.poll() is None, f"the driver ended first (exit {proc.returncode})"
        assert time.monotonic() < deadline, "timed out waiting for the job's events"
        time.sleep(0.2)


@pytest.mark.slow
def test_a_driver_killed_or_cancelled_while_it_trains_resumes_every_epoch_once(
        ray_local: None, store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Attempt 1 (a ``raykd run`` training on its driver) is SIGKILLed by the spec's fault
    right after epoch 2 of its first student; attempt 2 is stopped by SIGTERM (``ray job
    stop``, ``kill``) during its pause after epoch 3: a ``cancelled`` event. Attempt 3 (this
    process) finishes: each epoch ran once, and the numbers are the undisturbed job's."""
    import ray

    monkeypatch.setenv(ALLOW_ENV, "1")
    epochs = {"epochs": 4, "batch_size": 64, "lr": 0.003}
    spec = spec_for(store, "killed", methods=[{"method": "kd"}], train=epochs,
                    scaling={"student_runner": "driver"},
                    faults={"kill_student_after_epoch": 2, "epoch_sleep_s": 1.0})
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    env = {**os.environ, "RAY_ADDRESS": ray.get_runtime_context().gcs_address}
    events = store / "killed" / JobLayout.EVENTS
    command = [sys.executable, "-m", "raykd", "run", str(path), "--job-id", "killed"]
    first = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    assert first.wait(timeout=240) == -signal.SIGKILL  # the fault: the driver itself died
    second = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        _wait_for(events, lambda ev: any(e.type == "epoch" and e.epoch == 3 for e in ev),
                  second, 240)
        second.send_signal(signal.SIGTERM)
        assert second.wait(timeout=60) != 0
    finally:
        second.kill()
    result = run_job(parse_spec(spec), job_id="killed", log=lambda _: None)
    ev = read_events(events)
    assert [e.attempt for e in ev if e.type == "job_started"] == [1, 2, 3]
    failed = [e for e in ev if e.type == "job_failed"]
    assert [e.kind for e in failed] == ["cancelled"]  # SIGKILL leaves no event; SIGTERM does
    assert [e.epoch for e in ev if e.type == "epoch"] == [1, 2, 3, 4]  # each once, none lost
    assert "student_restarted" not in {e.type for e in ev}  # a driver's death is the job's
    calm = run_job(parse_spec(spec_for(store, "calm", methods=[{"method": "kd"}], train=epochs,
                                       scaling={"student_runner": "driver"})),
                   job_id="calm", log=lambda _: None)
    got, want = (r["students"][0]["generations"][0] for r in (result, calm))
    assert got["runner"] == "driver"
    for key in ("train_loss", "val_accuracy"):  # resumed weights, optimizer and batch order
        assert [h[key] for h in got["history"]] == [h[key] for h in want["history"]], key
    assert result["students"][0]["test_accuracy"] == calm["students"][0]["test_accuracy"]
