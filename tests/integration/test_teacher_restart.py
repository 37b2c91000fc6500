"""Restartable teachers: a teacher actor that dies comes back trained, and nothing leaks.

A real local Ray with two fake GPUs; teachers are small MLPs on scikit-learn's digits.
Two twin teachers (same model, same seed) make an undisturbed reference for a fit that a
kill interrupts. Actor processes are killed with SIGKILL, as an OOM kill would.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import ray

from raykd.data import Dataset, load_dataset
from raykd.models import load_checkpoint, weights_hash
from raykd.teachers import LogitCache, Teacher, TeacherConfig, TeacherPool

pytestmark = pytest.mark.ray
BIG = {"name": "mlp", "hidden": [256, 256]}  # slow enough to be killed mid-call
SMALL = {"name": "mlp", "hidden": [8]}
FIT = {"epochs": 24, "batch_size": 16, "lr": 0.003, "weight_decay": 0.0}
GPUS = 2


@pytest.fixture(scope="module")
def ray_gpus() -> Iterator[None]:
    """A local Ray with 2 CPUs and 2 fake GPUs (other modules may have left one running)."""
    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=2, num_gpus=GPUS, include_dashboard=False, logging_level="WARNING",
             log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def digits() -> Dataset:
    return load_dataset("digits")


@pytest.fixture(scope="module")
def refs(ray_gpus: None, digits: Dataset) -> dict[str, Any]:
    return {"x_train": ray.put(digits.train.x), "y_train": ray.put(digits.train.y),
            "x_val": ray.put(digits.val.x)}


@dataclass
class Trained:
    """A pool of twin teachers trained while teacher 0 was killed mid-fit."""

    pool: TeacherPool
    fitted: dict[int, dict[str, Any]]
    paths: list[str]
    pids_before: list[int]
    pids_after: list[int]
    untrained_hash: str
    killed_mid_fit: bool


def pids(pool: TeacherPool) -> list[int]:
    return [info["pid"] for info in pool.infos()]


def gpus_free() -> float:
    return ray.available_resources().get("GPU", 0.0)


def eventually(check: Callable[[], bool], timeout_s: float = 20.0, every_s: float = 0.1) -> bool:
    """Whether ``check`` holds within ``timeout_s`` (resources are released asynchronously)."""
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(every_s)
    return True


class MidFitKill(threading.Thread):
    """SIGKILLs ``pid`` ``after_s`` into a fit unless the fit has saved by then."""

    def __init__(self, path: str, pid: int, *, after_s: float) -> None:
        super().__init__(daemon=True)
        self.path, self.pid, self.after_s = path, pid, after_s
        self.killed = False

    def run(self) -> None:
        time.sleep(self.after_s)
        if not Path(self.path).exists():
            os.kill(self.pid, signal.SIGKILL)
            self.killed = True


@pytest.fixture(scope="module")
def trained(refs: dict[str, Any], digits: Dataset,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Trained]:
    """Twin teachers on one GPU each; teacher 0's process is killed while it trains."""
    out = tmp_path_factory.mktemp("teachers")
    paths = [str(out / f"teacher-{i}.safetensors") for i in range(2)]
    pool = TeacherPool([TeacherConfig(model=BIG, seed=7, trained_path=p) for p in paths],
                       input_shape=digits.input_shape, num_classes=digits.num_classes,
                       use_gpu=True, ready_timeout_s=60)
    try:
        untrained = pool.weights_hashes()[0]
        before = pids(pool)
        killer = MidFitKill(paths[0], before[0], after_s=0.5)
        killer.start()
        fitted = pool.fit_missing(refs["x_train"], refs["y_train"], out_paths=paths, **FIT)
        killer.join()
        yield Trained(pool, fitted, paths, before, pids(pool), untrained, killer.killed)
    finally:
        pool.shutdown()


@pytest.mark.slow
def test_a_fit_interrupted_by_a_kill_is_retried_to_the_undisturbed_weights(
        trained: Trained) -> None:
    pool = trained.pool
    assert trained.killed_mid_fit, "the fit saved before the kill: raise FIT['epochs']"
    assert trained.pids_after[0] != trained.pids_before[0]  # teacher 0 really restarted
    assert trained.pids_after[1] == trained.pids_before[1]
    assert sorted(trained.fitted) == [0, 1] and not trained.fitted[0].get("reused")
    hashes = pool.weights_hashes()
    assert hashes[0] == hashes[1] != trained.untrained_hash  # same as its undisturbed twin
    saved = [weights_hash(load_checkpoint(p)) for p in trained.paths]
    assert saved == hashes
    assert [c.checkpoint for c in pool.configs] == trained.paths


@pytest.mark.slow
def test_a_killed_teacher_comes_back_with_its_trained_weights(
        trained: Trained, refs: dict[str, Any], digits: Dataset) -> None:
    pool = trained.pool
    fp = digits.val.fingerprint
    before = pool.split_logits("val", refs["x_val"], fp, cache=LogitCache(None))
    infos = pool.infos()
    accuracy = (before.logits[0].argmax(-1) == digits.val.y).mean()
    assert accuracy > 0.8  # trained, not random

    os.kill(infos[1]["pid"], signal.SIGKILL)
    after = pool.split_logits("val", refs["x_val"], fp, cache=LogitCache(None))
    now = pool.infos()

    assert now[1]["pid"] != infos[1]["pid"]
    assert now[1]["weights_from"] == "trained_path"
    assert after.keys == before.keys  # same weights hashes, so the same cache entries
    np.testing.assert_allclose(after.logits, before.logits, rtol=0, atol=1e-5)
    assert now[1]["gpu_ids"] == infos[1]["gpu_ids"]  # back in its own bundle, on its GPU
    assert now[1]["threads"] == infos[1]["threads"] == now[1]["torch_threads"]


@pytest.mark.slow
def test_a_request_in_flight_during_a_kill_is_retried_and_answered(
        trained: Trained, digits: Dataset) -> None:
    actor = trained.pool.actors[0]
    big = ray.put(np.tile(digits.val.x, (1200, 1, 1, 1)))  # 216,000 rows: ~0.6 s a pass
    expected = ray.get(actor.logits.remote(big))
    info = ray.get(actor.info.remote())
    pending = actor.logits.remote(big)
    assert eventually(lambda: ray.get(actor.info.remote())["requests"] > info["requests"],
                      10, every_s=0.01)
    assert not ray.wait([pending], timeout=0)[0], "answered before the kill: grow the input"
    os.kill(info["pid"], signal.SIGKILL)

    got = ray.get(pending, timeout=60)

    assert ray.get(actor.info.remote())["pid"] != info["pid"]
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)


@pytest.mark.slow
def test_shutdown_releases_the_gpus_and_the_actors(trained: Trained) -> None:
    pool = trained.pool
    actors = list(pool.actors)
    assert gpus_free() == 0
    pool.shutdown()
    pool.shutdown()  # idempotent
    assert pool.actors == [] and pool.pg is None
    assert eventually(lambda: gpus_free() == GPUS)
    with pytest.raises(ray.exceptions.RayActorError):  # killed for good, not restarted
        ray.get(actors[0].info.remote(), timeout=20)


def one_teacher(digits: Dataset, tmp: Path, **config: Any) -> TeacherPool:
    cfg = {"model": SMALL, "trained_path": str(tmp / "t.safetensors"), **config}
    return TeacherPool([TeacherConfig(**cfg)], input_shape=digits.input_shape,
                       num_classes=digits.num_classes, use_gpu=True, ready_timeout_s=60)


def interrupt(*_: Any) -> list[int]:
    raise KeyboardInterrupt


@pytest.mark.slow
def test_a_failed_start_releases_the_gpus(ray_gpus: None, digits: Dataset,
                                          tmp_path: Path) -> None:
    with pytest.raises(ray.exceptions.RayActorError, match="does not exist"):
        one_teacher(digits, tmp_path, checkpoint=str(tmp_path / "missing.safetensors"))
    assert eventually(lambda: gpus_free() == GPUS)


@pytest.mark.slow
def test_a_cancelled_start_releases_the_gpus(ray_gpus: None, digits: Dataset, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(TeacherPool, "_share_nodes", interrupt)
    with pytest.raises(KeyboardInterrupt):
        one_teacher(digits, tmp_path)
    assert eventually(lambda: gpus_free() == GPUS)


@pytest.mark.slow
@pytest.mark.parametrize("failure", ["bad labels", "wrong out path", "cancelled"])
def test_a_failed_fit_releases_the_pool(failure: str, refs: dict[str, Any], digits: Dataset,
                                        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pool = one_teacher(digits, tmp_path)
    assert gpus_free() == GPUS - 1
    y, out_paths, error = refs["y_train"], None, ray.exceptions.RayTaskError
    if failure == "bad labels":
        y = ray.put(digits.train.y[:10])
    elif failure == "wrong out path":
        out_paths, error = [str(tmp_path / "elsewhere.safetensors")], ValueError
    else:
        monkeypatch.setattr(pool, "_share_nodes", interrupt)
        error = KeyboardInterrupt
    with pytest.raises(error):
        pool.fit_missing(refs["x_train"], y, out_paths=out_paths, **FIT)
    assert pool.actors == [] and pool.pg is None
    assert eventually(lambda: gpus_free() == GPUS)


# Restart semantics of Teacher itself (no Ray): what a restarted actor's constructor does.

def fit(teacher: Teacher, data: Dataset, out: str, **changes: Any) -> dict[str, Any]:
    args = {**FIT, "epochs": 2, **changes}
    return teacher.fit(data.train.x, data.train.y, seed=teacher.seed, out=out, **args)


def test_a_teacher_reloads_its_trained_path_and_does_not_train_it_twice(
        digits: Dataset, tmp_path: Path) -> None:
    path = str(tmp_path / "t.safetensors")

    def new() -> Teacher:  # what the actor's constructor does, on every (re)start
        return Teacher(0, SMALL, digits.input_shape, 10, seed=3, trained_path=path)

    first = new()
    fresh = first.weights_hash()
    assert first.info()["weights_from"] == "fresh"
    result = fit(first, digits, path)
    trained = first.weights_hash()
    stamp = os.stat(path).st_mtime_ns

    restarted = new()
    assert restarted.info()["weights_from"] == "trained_path"
    assert restarted.weights_hash() == trained != fresh
    again = fit(restarted, digits, path)  # the fit Ray retries after a restart
    assert again == {**result, "reused": True}
    assert restarted.weights_hash() == trained and os.stat(path).st_mtime_ns == stamp

    longer = fit(new(), digits, path, epochs=3)  # another fit: from fresh weights again
    assert not longer.get("reused")
    reference = Teacher(0, SMALL, digits.input_shape, 10, seed=3)
    fit(reference, digits, str(tmp_path / "ref.safetensors"), epochs=3)
    assert weights_hash(load_checkpoint(path)) == reference.weights_hash()


def test_an_unreadable_trained_path_gives_fresh_weights(digits: Dataset, tmp_path: Path) -> None:
    path = tmp_path / "t.safetensors"
    path.write_bytes(b"not a checkpoint")
    teacher = Teacher(0, SMALL, digits.input_shape, 10, seed=3, trained_path=str(path))
    assert teacher.info()["weights_from"] == "fresh"
    same_seed = Teacher(0, SMALL, digits.input_shape, 10, seed=3)
    assert teacher.weights_hash() == same_seed.weights_hash()
