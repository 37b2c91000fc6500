"""End to end on a real local Ray: teachers as actors, students on Ray Train, result.json.

Each job runs on digits with small MLPs; the teacher checkpoints and logits are cached
under the module's storage, so later tests reuse them exactly as later jobs would.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from raykd.cli import app
from raykd.core.spec import ModelSpec, parse_spec
from raykd.data import load_dataset
from raykd.engine import Job, LifecycleCallback, run_job
from raykd.engine.students import generation_seed
from raykd.models import build_model, load_checkpoint, save_checkpoint, weights_hash
from raykd.models.user import model_identity
from raykd.teachers.cache import LogitCache, cache_key
from raykd.train.steps import accuracy, predict_logits
from tests.helpers.specs import digits_spec

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def storage(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("raykd-storage")


def job(storage: Path, name: str, callbacks: tuple[LifecycleCallback, ...] = (),
        **overrides: Any) -> dict[str, Any]:
    spec = parse_spec(digits_spec(str(storage), name=name, **overrides))
    return run_job(spec, job_dir=storage / name, callbacks=callbacks)


class Epochs(LifecycleCallback):
    """The (generation, epoch) of each epoch event, as the lifecycle hands them over."""

    def __init__(self) -> None:
        self.seen: list[tuple[int, int]] = []

    def on_event(self, job: Job, event: Any) -> None:
        if event.type == "epoch":
            self.seen.append((event.generation, event.epoch))


@pytest.mark.slow
def test_kd_and_wkd_students_end_to_end(ray_local: None, storage: Path) -> None:
    methods = [{"method": "none"}, {"method": "kd"}, {"method": "wkd", "incorrect_weight": 0.75}]
    result = job(storage, "first", methods=methods)
    saved = json.loads((storage / "first" / "result.json").read_text())
    assert saved["students"][2]["label"] == "wkd W=0.75"
    data = load_dataset("digits")
    for t in saved["teachers"]:
        assert t["trained_by_raykd"] and 0.85 < t["test_accuracy"] <= 1.0
        # the reported accuracy is what the saved teacher really scores
        model = load_checkpoint(t["checkpoint"])
        assert t["test_accuracy"] == pytest.approx(accuracy(predict_logits(model, data.test.x), data.test.y))
    assert saved["ensemble"]["test_accuracy"] >= max(t["test_accuracy"] for t in saved["teachers"]) - 0.02
    paths = set()
    for s in saved["students"]:
        assert 0.8 < s["test_accuracy"] <= 1.0, s
        gen = s["generations"][0]
        assert len(gen["history"]) == 4 and gen["history"][-1]["epoch"] == 4
        assert Path(gen["checkpoint"]).read_bytes()[8:9] == b"{"
        paths.add(gen["checkpoint"])
    assert len(paths) == 3
    for stage in ("data", "ray_init", "teacher_train", "teacher_logits", "students", "total"):
        assert result["timings"][stage] >= 0
    assert result["logit_cache"]["teacher"]["train"]["teacher_forward_examples"] == 3 * len(data.train)


@pytest.mark.slow
def test_rerunning_into_a_finished_job_dir_is_refused(ray_local: None, storage: Path, tmp_path: Path) -> None:
    """The reproduction of issue 8: a second run into the first's directory must not mix."""
    before = (storage / "first" / "result.json").read_bytes()
    path = tmp_path / "again.yaml"
    path.write_text(json.dumps(digits_spec(str(storage), name="first", train={"epochs": 1, "lr": 1e-5})))
    result = CliRunner().invoke(app, ["run", str(path), "--job-dir", str(storage / "first")])
    assert result.exit_code == 2, result.output
    assert "was started from a different spec" in result.output and "Traceback" not in result.output
    assert (storage / "first" / "result.json").read_bytes() == before


@pytest.mark.slow
def test_second_job_reuses_teachers_and_their_logits(ray_local: None, storage: Path) -> None:
    result = job(storage, "second")
    assert not any(t["trained_by_raykd"] for t in result["teachers"])
    for split in ("train", "val", "test"):
        stats = result["logit_cache"]["teacher"][split]
        assert stats == {**stats, "cache_hits": 3, "teacher_forward_examples": 0}
    assert sum(p["forward_examples"] for p in result["teacher_placement"]) == 0


@pytest.mark.slow
def test_a_resumed_job_still_reports_the_teachers_it_trained(ray_local: None, tmp_path: Path) -> None:
    """Attempt 2 loads the teachers attempt 1 trained, every logit from the cache: the result
    keeps saying that this job trained them, and for how long."""
    spec = parse_spec(digits_spec(str(tmp_path), name="twice", cache={"dir": str(tmp_path / "cache")},
                                  teachers=[{"model": {"name": "mlp", "hidden": [16]}, "seed": 1}],
                                  teacher_train={"epochs": 2, "batch_size": 64, "lr": 0.003},
                                  train={"epochs": 1, "batch_size": 64, "lr": 0.003}))
    first = run_job(spec, job_id="twice", log=lambda _: None)
    (trained,) = first["teachers"]
    assert trained["trained_by_raykd"] and trained["train_seconds"] > 0
    (tmp_path / "twice" / "result.json").unlink()  # so attempt 2 runs every stage again
    again = run_job(spec, job_id="twice", log=lambda _: None)
    assert again["attempts"] == 2
    assert again["logit_cache"]["teacher"]["train"]["cache_hits"] == 1  # a full cache hit
    (reported,) = again["teachers"]
    assert reported["trained_by_raykd"] is True
    assert reported["train_seconds"] == trained["train_seconds"]
    assert reported["checkpoint"] == trained["checkpoint"]


@pytest.mark.slow
def test_val_accuracy_teacher_weights_reach_the_students_loss(ray_local: None, storage: Path) -> None:
    """One job, two kd students alike but for ``teacher_weights``: the val_accuracy one used the
    log-odds weights of the teachers' reported val accuracies (not all 1), and learnt other
    numbers than the uniform one from its first epoch (weights that never reached the loss
    would give the very same losses: same seed, same batches, same logits)."""
    from raykd.losses import accuracy_weights

    result = job(storage, "weighted", methods=[{"method": "kd"}, {"method": "kd", "teacher_weights": "val_accuracy"}],
                 train={"epochs": 2, "batch_size": 64, "lr": 0.003})
    uniform, weighted = (s["generations"][0] for s in result["students"])
    accs = [t["val_accuracy"] for t in result["teachers"]]
    expected = [float(w) for w in accuracy_weights(accs, num_classes=10)]
    assert uniform["teacher_weights"] is None
    assert weighted["teacher_weights"] == pytest.approx(expected, rel=1e-12)
    assert sum(weighted["teacher_weights"]) == pytest.approx(3.0)
    assert max(expected) - min(expected) > 1e-3, accs  # the teachers' accuracies differ
    losses = [[h["train_loss"] for h in g["history"]] for g in (uniform, weighted)]
    assert all(a != b for a, b in zip(*losses, strict=True)), losses


@pytest.mark.slow
def test_born_again_annealing_on_two_ddp_workers(ray_local: None, storage: Path) -> None:
    epochs = Epochs()  # reported by Ray Train's controller, in a process of its own
    result = job(storage, "ban", methods=[{"method": "annealing", "generations": 2}],
                 scaling={"num_workers": 2}, train={"epochs": 3, "batch_size": 64, "lr": 0.003},
                 callbacks=(epochs,))
    assert epochs.seen == [(1, 1), (1, 2), (1, 3), (2, 1), (2, 2), (2, 3)]
    (row,) = result["students"]
    g1, g2 = row["generations"]
    assert [g1["generation"], g2["generation"]] == [1, 2]
    assert g1["checkpoint"] != g2["checkpoint"]
    assert g1["seed"] == 0 and g2["seed"] == generation_seed(0, 2) != 0
    assert row["method"] == "annealing" and row["temperature"] == 1.0
    assert 0.8 < row["ban_test_accuracy"] <= 1.0
    # generation 2 was taught by generation 1: the one teacher whose train logits it read is
    # generation 1's checkpoint, and those logits are that model's outputs on the train split
    stats = result["logit_cache"]["annealing x2 gen generation 1"]["train"]
    assert stats["cache_hits"] == 0 and len(stats["cache_keys"]) == 1
    gen1 = load_checkpoint(g1["checkpoint"])
    data = load_dataset("digits")
    student = ModelSpec.model_validate(result["spec"]["student"]["model"]).model_dump()
    key = cache_key(weights=weights_hash(gen1), model=model_identity(student),
                    fingerprint=data.train.fingerprint, split="train")
    assert stats["cache_keys"] == [key]
    served = LogitCache(storage / "cache").get(key)
    np.testing.assert_allclose(served, predict_logits(gen1, data.train.x), rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_nan_teacher_logits_are_a_clear_error(ray_local: None, storage: Path, tmp_path: Path) -> None:
    config = {"name": "mlp", "hidden": [32]}
    model = build_model(config, (1, 8, 8), 10)
    with torch.no_grad():
        model[-1].bias[3] = float("nan")
    ckpt = save_checkpoint(model, tmp_path / "nan.safetensors", config=config, input_shape=(1, 8, 8),
                           num_classes=10)
    spec = digits_spec(str(storage), name="nan")
    spec["teachers"][2]["checkpoint"] = str(ckpt)
    path = tmp_path / "nan.yaml"
    path.write_text(json.dumps(spec))
    result = CliRunner().invoke(app, ["run", str(path)])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert "teacher 2 logits contain NaN/inf" in result.output


def test_bundled_example_parses_and_demo_is_fast_enough() -> None:
    from raykd.core.spec import example_names, load_spec

    assert {"mnist-wkd", "digits-quick"} <= set(example_names())
    demo = load_spec("mnist-wkd")
    # what the README promises of the demo: full MNIST, 3 same-size CNN teachers of distinct
    # seeds, same-size students alone / kd / wkd W=0.75, a few minutes on 2 cores
    assert demo.data.dataset == "mnist" and demo.data.train_limit is None
    assert [m.method for m in demo.methods] == ["none", "kd", "wkd"]
    assert demo.methods[2].incorrect_weight == 0.75 and len(demo.teachers) == 3
    assert len({t.seed for t in demo.teachers}) == 3
    assert all(t.model == demo.student.model for t in demo.teachers)
    assert demo.train.epochs <= 3 and demo.teacher_train.epochs <= 3


@pytest.mark.slow
def test_online_serving_with_augmentation_on_two_workers(ray_local: None, storage: Path) -> None:
    """Augmentation: the actors serve logits while 2 DDP workers train (per-batch pairing is
    checked in test_server.py); the student learns and every epoch of both ranks ran."""
    online = job(storage, "online-kd", data={"dataset": "digits", "augment": True},
                 train={"epochs": 6, "batch_size": 64, "lr": 0.003}, scaling={"num_workers": 2})
    (gen,) = online["students"][0]["generations"]
    assert [h["epoch"] for h in gen["history"]] == [1, 2, 3, 4, 5, 6]
    assert online["students"][0]["test_accuracy"] > 0.85


ROWS, PAIRING_EPOCHS = 192, 2


def _row_teacher_class() -> Any:
    """A stand-in teacher actor whose logits name the rows it was asked about.

    Row i of the test's images is the constant image i; after augmentation (a shift of at
    most one pixel with zero fill, noise of 0.1) the median of its pixels still rounds to i.
    Teacher m answers logits (i, m, 0, ...) for row i, so a served batch says which rows,
    and which teacher, it belongs to.
    """
    import ray

    @ray.remote(num_cpus=0)
    class RowTeacher:
        def __init__(self, index: int, num_classes: int) -> None:
            self.index, self.num_classes = index, num_classes

        def logits(self, x: np.ndarray) -> np.ndarray:
            out = np.zeros((len(x), self.num_classes), np.float32)
            out[:, 0] = np.round(np.median(x.reshape(len(x), -1), axis=1))
            out[:, 1] = self.index
            return out

    return RowTeacher


def _pairing_worker(config: dict[str, Any]) -> None:
    """One Ray Train worker: every step of the loop's generator, as ids, written to a file."""
    import ray.train

    from raykd.train.loop import _batches
    from raykd.train.runs import loop_data

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    data = loop_data(config["refs"])
    steps = []
    for epoch in range(PAIRING_EPOCHS):
        gen = torch.Generator().manual_seed(epoch * 10 + rank)
        for xb, yb, tl in _batches(data, config["student"], epoch, rank, world, gen):
            assert tl is not None
            steps.append({"epoch": epoch, "x": np.round(np.median(xb.reshape(len(xb), -1).numpy(), axis=1)).tolist(),
                          "y": yb.tolist(), "rows": tl[:, :, 0].tolist(), "teacher": tl[:, :, 1].tolist(),
                          "augmented": bool((xb.numpy() != np.round(xb.numpy())).any())})
    Path(config["out"], f"rank-{rank}.json").write_text(json.dumps(steps))


@pytest.mark.slow
def test_each_step_of_online_serving_gets_the_logits_of_its_own_rows(ray_local: None, tmp_path: Path) -> None:
    """The loop's step-ahead generator (``_batches`` -> ``_online``) on 2 Ray Train workers
    with augmentation, served by stand-in teachers whose logits name their rows: at every
    step of every rank, each teacher's logits are those of the very (augmented) rows that
    step trains on, the rank's shard of that step's global batch, and none other."""
    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from raykd.core.spec import MethodSpec, TrainSpec
    from raykd.train.config import StudentConfig
    from raykd.train.steps import epoch_batches

    x = np.broadcast_to(np.arange(ROWS, dtype=np.float32)[:, None, None, None], (ROWS, 1, 8, 8)).copy()
    y = (np.arange(ROWS) % 10).astype(np.int64)
    row_teacher = _row_teacher_class()
    teachers = [row_teacher.remote(m, 10) for m in range(2)]
    train = TrainSpec(epochs=PAIRING_EPOCHS, batch_size=32, lr=0.01, seed=5)
    student = StudentConfig(model={"name": "linear"}, input_shape=(1, 8, 8), num_classes=10,
                            method=MethodSpec(method="kd"), train=train, augment=True)
    refs = {"data": {"x_train": ray.put(x), "y_train": ray.put(y), "x_val": ray.put(x[:4]),
                     "y_val": ray.put(y[:4])}, "teacher_actors": teachers}
    try:
        TorchTrainer(_pairing_worker, train_loop_config={"refs": refs, "student": student, "out": str(tmp_path)},
                     scaling_config=ScalingConfig(num_workers=2, resources_per_worker={"CPU": 1}),
                     run_config=RunConfig(name="pairing", storage_path=str(tmp_path / "ray_train"))).fit()
    finally:
        for t in teachers:
            ray.kill(t)
    ranks = [json.loads((tmp_path / f"rank-{r}.json").read_text()) for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == PAIRING_EPOCHS * (ROWS // 32)
    for rank, steps in enumerate(ranks):
        expected = [list(idx) for epoch in range(PAIRING_EPOCHS)
                    for idx in epoch_batches(ROWS, batch_size=32, seed=5, epoch=epoch, rank=rank, world_size=2)]
        for n, step in enumerate(steps):
            where = f"rank {rank}, step {n}"
            assert step["augmented"], where  # the noise was applied: the rows were augmented
            assert step["x"] == expected[n], where  # the rank's shard of this step's global batch
            assert step["rows"] == [step["x"], step["x"]], where  # both teachers: this step's rows
            assert step["teacher"] == [[0.0] * 16, [1.0] * 16], where  # in teacher order
            assert step["y"] == [int(i) % 10 for i in step["x"]], where
    for a, b in zip(*ranks, strict=True):  # the two ranks' shards of one step never overlap
        assert not set(a["x"]) & set(b["x"])


@pytest.mark.slow
def test_relative_storage_works_when_actors_run_elsewhere(ray_local: None, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Ray's workers keep the directory Ray started in; the driver moved: paths must be absolute."""
    monkeypatch.chdir(tmp_path)
    spec = parse_spec(digits_spec("relative-runs", name="rel", methods=[{"method": "kd"}],
                                  train={"epochs": 1, "batch_size": 64, "lr": 0.003}))
    result = run_job(spec)
    assert Path(result["job_dir"]).is_absolute()
    assert Path(result["job_dir"]).parent == tmp_path / "relative-runs"
    for t in result["teachers"]:
        assert t["trained_by_raykd"] and Path(t["checkpoint"]).is_file()
        assert Path(t["checkpoint"]).is_relative_to(tmp_path / "relative-runs")


@pytest.mark.slow
@pytest.mark.parametrize(("command", "message"), [
    ("run", "scaling.num_workers=3 x scaling.cpus_per_worker=1 needs 3 CPUs, the cluster has 2"),
    ("sweep", "one trial needs 3.01 CPUs, the cluster has 2"),
])
def test_more_workers_than_cpus_fails_fast(ray_local: None, tmp_path: Path, command: str,
                                           message: str) -> None:
    """Refused as soon as the data's size is known: no teacher trained, no logit cached."""
    path = tmp_path / "big.yaml"
    spec = digits_spec(str(tmp_path / "runs"), name="big", scaling={"num_workers": 3},
                       cache={"dir": str(tmp_path / "cache")})
    if command == "sweep":
        spec["sweep"] = {"searcher": "grid", "method": ["kd", "annealing"]}
    path.write_text(json.dumps(spec))
    result = CliRunner().invoke(app, [command, str(path)])
    assert result.exit_code == 2, result.output
    assert message in result.output
    (events,) = (tmp_path / "runs").glob("*/events.jsonl")
    kinds = [json.loads(line) for line in events.read_text().splitlines()]
    assert kinds[-1]["type"] == "job_failed"
    assert not [e for e in kinds if e["type"] == "teacher_ready" or str(e.get("stage", "")).startswith("teacher")]
    assert not (events.parent / "teachers").exists()
    assert not [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]
