"""Issue 12's fixed costs: one student actor per job, no teacher actor on a full cache hit,
and online logits from one ensemble actor on CPUs; all on a real local Ray."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from raykd.core.spec import SpecError, parse_spec
from raykd.engine import run_job
from raykd.engine.cluster import runner_for
from tests.helpers.checkpoints import tiny_teachers
from tests.helpers.specs import digits_spec

EPOCHS = 3
METHODS = [{"method": "none"}, {"method": "kd"}, {"method": "wkd", "incorrect_weight": 0.5}]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One storage (and so one logit cache) for the module: later jobs reuse the teachers."""
    return tmp_path_factory.mktemp("runner")


def actor_ids(class_name: str) -> dict[str, str]:
    """Every actor of ``class_name`` this Ray has seen (dead ones included): id -> state."""
    import ray
    from ray.util.state import list_actors

    return {a.actor_id: a.state for a in list_actors(address=ray.get_runtime_context().gcs_address, filters=[("class_name", "=", class_name)],
                                                     limit=10_000, raise_on_missing_output=False)}


def new_actors(class_name: str, before: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in actor_ids(class_name).items() if k not in before}


def job(store: Path, name: str, **overrides: Any) -> dict[str, Any]:
    spec = digits_spec(str(store), name=name, methods=METHODS,
                       train={"epochs": EPOCHS, "batch_size": 64, "lr": 0.003}, **overrides)
    return run_job(parse_spec(spec), job_id=name, log=lambda _: None)


def histories(result: dict[str, Any]) -> list[list[dict[str, Any]]]:
    return [s["generations"][0]["history"] for s in result["students"]]


@pytest.mark.slow
def test_one_student_actor_trains_every_student_of_the_job(ray_local: None, store: Path) -> None:
    before = actor_ids("StudentWorker")
    result = job(store, "actor", scaling={"num_workers": 1, "student_runner": "actor"})
    started = new_actors("StudentWorker", before)
    assert len(started) == 1, started  # three students, one process
    deadline = time.monotonic() + 30
    while set(new_actors("StudentWorker", before).values()) != {"DEAD"}:
        assert time.monotonic() < deadline, "the student actor outlived its job"
        time.sleep(0.5)  # ray.kill is asynchronous
    gens = [s["generations"][0] for s in result["students"]]
    assert [g["runner"] for g in gens] == ["actor"] * 3
    assert all(len(g["history"]) == EPOCHS for g in gens)
    assert all(s["test_accuracy"] > 0.8 for s in result["students"])
    t = result["timings"]  # the student stage's fixed costs, inside it
    parts = ("student_actor_start", "student_validation", "student_state_save", "student_scoring")
    assert all(t[k] > 0 for k in parts), t
    assert sum(t[k] for k in parts) < t["students"]
    states = store / "actor" / "student_states" / "student-1-g1-a1"
    assert sorted(p.name for p in states.iterdir()) == ["epoch-0002", "epoch-0003"]  # newest two
    check_damaged_states_are_refused(states / "epoch-0003")
    assert not (store / "actor" / "ray_train").exists()


def check_damaged_states_are_refused(state: Path) -> None:
    """A saved training state passes its manifest; with one byte of its optimizer flipped,
    or its progress truncated, it is refused by name (never resumed from)."""
    from raykd.models.checkpoint import CheckpointDamaged
    from raykd.train.state import check_state, load_progress

    assert load_progress(state).epoch == EPOCHS
    for name, damage in (("optimizer.pt", lambda b: b[:-9] + bytes([b[-9] ^ 1]) + b[-8:]),
                         ("progress.json", lambda b: b[: len(b) // 2])):
        path = state / name
        whole = path.read_bytes()
        path.write_bytes(damage(whole))
        with pytest.raises(CheckpointDamaged, match=f"{name} fail their checksum"):
            check_state(state)
        path.write_bytes(whole)
    check_state(state)


@pytest.mark.slow
def test_ray_train_and_the_actor_train_the_same_student_and_cached_teachers_start_no_actor(
        ray_local: None, store: Path) -> None:
    actor = job(store, "actor-again", scaling={"num_workers": 1, "student_runner": "actor"})
    teachers_before = actor_ids("TeacherServer")
    train = job(store, "train", scaling={"num_workers": 1, "student_runner": "train"})
    assert not new_actors("TeacherServer", teachers_before)  # every logit came from the cache
    assert train["teacher_placement"] == []
    assert all(t["test_accuracy"] > 0.8 for t in train["teachers"])
    assert [g["runner"] for s in train["students"] for g in s["generations"]] == ["train"] * 3
    assert (store / "train" / "ray_train").is_dir()
    for a, t in zip(histories(actor), histories(train), strict=True):  # the same loop, either way
        assert [h["train_loss"] for h in a] == pytest.approx([h["train_loss"] for h in t], rel=1e-5)
        assert [h["val_accuracy"] for h in a] == [h["val_accuracy"] for h in t]


@pytest.mark.slow
def test_online_teachers_in_the_students_process_train_exactly_as_an_ensemble_actor(
        ray_local: None, tmp_path: Path) -> None:
    """Augmentation on CPUs, one student worker, a born-again generation. By default the
    teachers run in the student actor's process: no actor serves logits, and the students
    (both generations) train exactly as with ``online_teachers: actors``, where one
    ensemble actor serves every step (a per-teacher pool serves the born-again one)."""
    classes = ("EnsembleServer", "TeacherServer", "StudentWorker")
    results, actors, said = {}, {}, []
    for mode in ("auto", "actors"):
        before = {c: actor_ids(c) for c in classes}
        # its own storage: its born-again logits stay out of the module's cache, which
        # test_damaged_cache_entries_... damages by picking files from it
        spec = digits_spec(str(tmp_path), name=f"online-{mode}", methods=[{"method": "kd", "generations": 2}],
                           data={"dataset": "digits", "seed": 0, "augment": True},
                           train={"epochs": EPOCHS, "batch_size": 64, "lr": 0.003},
                           scaling={"online_teachers": mode})
        results[mode] = run_job(parse_spec(spec), job_id=f"online-{mode}", log=said.append)
        actors[mode] = {c: new_actors(c, before[c]) for c in classes}
    assert results["auto"]["online_teachers"] == "in_process"
    assert results["actors"]["online_teachers"] == "actors"
    assert not actors["auto"]["EnsembleServer"] and len(actors["actors"]["EnsembleServer"]) == 1
    assert [len(actors[m]["StudentWorker"]) for m in ("auto", "actors")] == [1, 1]
    for mode in ("auto", "actors"):  # the born-again teacher's pool (val/test logits) is gone
        assert set(actors[mode]["TeacherServer"].values()) <= {"DEAD"}
    assert sum("in the student's process" in s for s in said) == 1, said
    gens = {m: results[m]["students"][0]["generations"] for m in results}
    assert [g["generation"] for g in gens["auto"]] == [1, 2]
    for a, b in zip(gens["auto"], gens["actors"], strict=True):  # the same logits, step by step
        # equal up to float sums (the student's thread counts may differ between the modes)
        assert [h["train_loss"] for h in a["history"]] == pytest.approx([h["train_loss"] for h in b["history"]], rel=1e-4)
        assert a["test_accuracy"] == pytest.approx(b["test_accuracy"], abs=0.01)
    assert gens["auto"][0]["test_accuracy"] > 0.8


def test_the_ensemble_serves_what_each_teacher_computes(tmp_path: Path) -> None:
    from raykd.teachers import Teacher
    from raykd.teachers.ensemble import EnsembleServer

    configs = tiny_teachers(tmp_path)
    x = np.random.default_rng(0).normal(size=(5, 6)).astype(np.float32)
    served = EnsembleServer(configs, (6,), 3, student_threads=1).logits(x)
    alone = np.stack([Teacher(i, c["model"], (6,), 3, checkpoint=c["checkpoint"]).logits(x)
                      for i, c in enumerate(configs)])
    assert served.shape == (2, 5, 3)
    np.testing.assert_array_equal(served, alone)


def test_the_actor_runner_with_two_workers_is_refused() -> None:
    with pytest.raises(SpecError, match="student_runner='actor' trains each student in one "
                                        "process, but scaling.num_workers=2"):
        parse_spec(digits_spec("/tmp/x", scaling={"num_workers": 2, "student_runner": "actor"}))



@pytest.mark.parametrize(("spec", "gpus", "local", "runner"), [
    ({"scaling": {"num_workers": 2}}, False, True, "train"),  # DDP: Ray Train, wherever
    ({}, False, True, "driver"),  # a local Ray this process started, 1 worker, CPU
    ({}, False, False, "actor"),  # a cluster it joined: the driver may sit on the head
    ({}, True, True, "actor"),  # GPUs
    ({"data": {"dataset": "digits", "augment": True}}, False, True, "actor"),  # online teachers
    ({"faults": {"kill_student_after_epoch": 1}}, False, True, "actor"),  # a kill to survive
    ({"scaling": {"num_workers": 1, "student_runner": "driver"}}, False, False, "driver"),
])
def test_auto_picks_the_student_runner_from_the_spec_and_the_cluster(
        spec: dict[str, Any], gpus: bool, local: bool, runner: str) -> None:
    assert runner_for(parse_spec(digits_spec("/tmp/x", **spec)), gpus=gpus, local=local) == runner


def test_a_job_resumes_only_on_the_data_it_started_with(tmp_path: Path) -> None:
    from raykd.core.errors import JobDirError
    from raykd.data import load_dataset
    from raykd.engine.context import Job
    from raykd.engine.data_stage import check_same_data

    job = Job(spec=parse_spec(digits_spec(str(tmp_path))), job_dir=tmp_path / "j", job_id="j")
    check_same_data(job, load_dataset("digits", seed=0))  # attempt 1 records the splits
    check_same_data(job, load_dataset("digits", seed=0))  # the same data resumes
    with pytest.raises(JobDirError, match=r"its data 'digits' changed since it started \(the "
                                          r"train, val, test split\(s\) differ\)"):
        check_same_data(job, load_dataset("digits", seed=1))  # another split: refused




@pytest.mark.slow
def test_each_worker_asks_its_own_copy_of_the_ensemble(ray_local: None, tmp_path: Path) -> None:
    import torch

    from raykd.core.spec import MethodSpec, TrainSpec
    from raykd.teachers.ensemble import OnlineEnsemble
    from raykd.train.config import StudentConfig
    from raykd.train.loop import LoopData, _batches

    ens = OnlineEnsemble(tiny_teachers(tmp_path), input_shape=(6,), num_classes=3,
                         student_threads=2, replicas=2)
    try:
        rng = np.random.default_rng(0)
        x, y = rng.normal(size=(40, 6)).astype(np.float32), rng.integers(0, 3, 40)
        data = LoopData(x_train=x, y_train=y, x_val=x, y_val=y, teacher_actors=ens.actors,
                        teacher_replicas=True)
        config = StudentConfig(model={"name": "mlp", "hidden": [8]}, input_shape=(6,),
                               num_classes=3, method=MethodSpec(method="kd"),
                               train=TrainSpec(epochs=1, batch_size=8))
        steps = {r: list(_batches(data, config, 0, r, 2, torch.Generator())) for r in (0, 1)}
        assert all(len(v) == 5 and v[0][2].shape == (2, 4, 3) for v in steps.values())
        assert [i["requests"] for i in ens.infos()] == [5, 5]  # rank r asked copy r only
        assert ens.threads == 1  # 2 student threads fill the 2 CPUs: one thread a copy
    finally:
        ens.shutdown()


@pytest.mark.slow
def test_damaged_cache_entries_and_teacher_files_are_reported_and_computed_again(
        ray_local: None, store: Path) -> None:
    """Issue 14's storage faults: a truncated teacher checkpoint and a logit entry with one
    flipped byte are refused by their checksums, said in the job's messages, and computed
    again: the job's numbers equal those of the undisturbed run before it."""
    from raykd.core.events import read_events

    before = job(store, "undamaged")
    cache = store / "cache"
    teacher = sorted((cache / "teachers").glob("*.safetensors"))[0]
    teacher.write_bytes(teacher.read_bytes()[:-64])
    entry = max(cache.glob("*.npz"), key=lambda p: p.stat().st_size)
    raw = bytearray(entry.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    entry.write_bytes(bytes(raw))

    after = job(store, "damaged")
    said = [e.text for e in read_events(store / "damaged" / "events.jsonl") if e.type == "message"]
    assert any(str(teacher) in s and "trains again" in s for s in said), said
    assert any(f"{entry.name} is damaged" in s for s in said), said
    assert entry.name in " ".join(after["damaged_files"])
    assert teacher.is_file()  # trained again and published again
    assert [t["test_accuracy"] for t in after["teachers"]] == [t["test_accuracy"] for t in before["teachers"]]
    for a, b in zip(histories(before), histories(after), strict=True):
        assert [h["val_accuracy"] for h in a] == [h["val_accuracy"] for h in b]


def test_states_write_unchanged_best_weights_once_and_resume_exactly(tmp_path: Path) -> None:
    """A state whose best epoch did not change links the earlier state's best weights (the
    same file, not a rewrite); every state passes its manifest, holds that epoch's best
    weights, and a run resumed from any of them ends exactly as the uninterrupted one."""
    import torch

    from raykd.data import load_dataset
    from raykd.models import load_checkpoint
    from raykd.train.actor import save_epoch_state
    from raykd.train.config import StudentConfig
    from raykd.train.loop import LoopData, student_epochs
    from raykd.train.state import BEST_FILE, MODEL_FILE, load_progress

    spec = parse_spec(digits_spec(str(tmp_path), train={"epochs": 6, "batch_size": 64,
                                                        "lr": 0.05}, methods=[{"method": "none"}]))
    data = load_dataset("digits", seed=0)
    config = StudentConfig.for_job(spec, data, spec.methods[0])
    loop = LoopData(data.train.x, data.train.y, data.val.x, data.val.y)
    best: dict[int, dict[str, torch.Tensor]] = {}
    for metrics, state in student_epochs(config, loop):
        epoch = int(metrics["epoch"])
        save_epoch_state(tmp_path / "run", epoch, state, config)
        best[epoch] = {k: v.clone() for k, v in (state.best_weights or {}).items()}
    states = [tmp_path / "run" / f"epoch-{e:04d}" for e in range(1, 7)]
    epochs_of_best = [load_progress(s).best_epoch for s in states]
    assert len(set(epochs_of_best)) < 6, "the best epoch never held: nothing to link"
    for i, s in enumerate(states):
        saved = load_checkpoint(s / BEST_FILE).state_dict()
        assert all(torch.equal(saved[k], v) for k, v in best[i + 1].items())
        inode = (s / BEST_FILE).stat().st_ino
        same_best = i > 0 and epochs_of_best[i] == epochs_of_best[i - 1]
        assert (inode == (states[i - 1] / BEST_FILE).stat().st_ino) == same_best
        assert (inode == (s / MODEL_FILE).stat().st_ino) == (epochs_of_best[i] == i + 1)
    whole = load_progress(states[-1]).history
    for s in states[:-1]:
        resumed = list(student_epochs(config, loop, resume=s))
        assert [m["train_loss"] for m, _ in resumed] == [h["train_loss"] for h in whole[len(
            load_progress(s).history):]]
        assert resumed[-1][1].progress.best_epoch == load_progress(states[-1]).best_epoch
