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
from raykd.data import load_dataset
from raykd.models import build_model, load_checkpoint, save_checkpoint
from raykd.runner import run_job
from raykd.spec import parse_spec
from raykd.train.steps import accuracy, predict_logits
from tests.conftest import digits_spec

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def storage(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("raykd-storage")


def job(storage: Path, name: str, **overrides: Any) -> dict[str, Any]:
    spec = parse_spec(digits_spec(str(storage), name=name, **overrides))
    return run_job(spec, job_dir=storage / name)


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


def test_second_job_reuses_teachers_and_their_logits(ray_local: None, storage: Path) -> None:
    result = job(storage, "second")
    assert not any(t["trained_by_raykd"] for t in result["teachers"])
    for split in ("train", "val", "test"):
        stats = result["logit_cache"]["teacher"][split]
        assert stats == {**stats, "cache_hits": 3, "teacher_forward_examples": 0}
    assert sum(p["forward_examples"] for p in result["teacher_placement"]) == 0


def test_born_again_annealing_on_two_ddp_workers(ray_local: None, storage: Path) -> None:
    result = job(storage, "ban", methods=[{"method": "annealing", "generations": 2}],
                 scaling={"num_workers": 2}, train={"epochs": 3, "batch_size": 64, "lr": 0.003})
    (row,) = result["students"]
    assert [g["generation"] for g in row["generations"]] == [1, 2]
    assert row["generations"][0]["checkpoint"] != row["generations"][1]["checkpoint"]
    assert 0.8 < row["ban_test_accuracy"] <= 1.0
    # generation 2 was taught by generation 1: its logits were computed once, by one teacher
    assert result["logit_cache"]["annealing x2 gen generation 1"]["train"]["cache_hits"] == 0


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
    from raykd.spec import example_names, load_spec

    assert {"mnist-wkd", "digits-quick"} <= set(example_names())
    demo = load_spec("mnist-wkd")
    assert [m.method for m in demo.methods] == ["none", "kd", "wkd"]
    assert demo.methods[2].incorrect_weight == 0.75 and len(demo.teachers) == 3
    assert np.isfinite(demo.train.lr)


def test_online_serving_with_augmentation_matches_the_cached_path(ray_local: None, storage: Path) -> None:
    cached = job(storage, "cached-kd", train={"epochs": 6, "batch_size": 64, "lr": 0.003})
    online = job(storage, "online-kd", data={"dataset": "digits", "augment": True},
                 train={"epochs": 6, "batch_size": 64, "lr": 0.003}, scaling={"num_workers": 2})
    gap = cached["students"][0]["test_accuracy"] - online["students"][0]["test_accuracy"]
    assert gap < 0.05, (cached["students"][0]["test_accuracy"], online["students"][0]["test_accuracy"])
    assert online["students"][0]["test_accuracy"] > 0.85


def test_more_workers_than_cpus_fails_fast(ray_local: None, storage: Path, tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    path.write_text(json.dumps(digits_spec(str(storage), name="big", scaling={"num_workers": 3})))
    result = CliRunner().invoke(app, ["run", str(path)])
    assert result.exit_code == 2, result.output
    assert "scaling.num_workers=3 x scaling.cpus_per_worker=1 needs 3 CPUs, the cluster has 2" in result.output
