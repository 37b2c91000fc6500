"""A CSV a user brings, end to end on a real local Ray: ``raykd run``, then ``raykd predict``
(names and probabilities, clear errors, the unseen-category fallback) and ``raykd export``
(ONNX agrees with PyTorch; a self-describing safetensors file)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from tests.conftest import digits_spec
from tests.test_tables import weather_frame

pytestmark = pytest.mark.ray


def raykd(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The raykd command line, as a user runs it (a fresh process)."""
    env = {**os.environ, "RAY_ADDRESS": ""}
    return subprocess.run([sys.executable, "-m", "raykd", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=180)


@pytest.fixture(scope="module")
def job(ray_local: None, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One small job on a CSV with text classes, categories, an index column and gaps."""
    from raykd.engine import run_job
    from raykd.spec import parse_spec

    root = tmp_path_factory.mktemp("weather")
    csv = root / "weather.csv"
    weather_frame(n=400).to_csv(csv, index=False)
    spec = parse_spec(digits_spec(
        str(root / "runs"), name="weather",
        data={"dataset": str(csv), "label_column": "outlook", "seed": 0},
        teachers=[{"model": {"name": "mlp", "hidden": [16]}, "seed": s} for s in (1, 2)],
        teacher_train={"epochs": 15, "batch_size": 32, "lr": 0.01},
        student={"model": {"name": "mlp", "hidden": [8]}},
        train={"epochs": 15, "batch_size": 32, "lr": 0.01}))
    result = run_job(spec, job_dir=root / "runs" / "job", log=lambda _: None)
    return {"result": result, "root": root, "csv": csv, "dir": root / "runs" / "job"}


def test_result_and_checkpoint_carry_names_and_columns(job: dict[str, Any]) -> None:
    from raykd.models import checkpoint_info

    dataset = job["result"]["dataset"]
    assert dataset["class_names"] == ["cold", "hot", "mild"]
    assert [c["column"] for c in dataset["table"]["used"]] == ["city", "temp", "wind", "sky"]
    assert dataset["table"]["dropped"][0]["column"] == "Unnamed: 0"
    assert (job["dir"] / "preprocessing.json").is_file()
    info = checkpoint_info(job["result"]["students"][0]["generations"][0]["checkpoint"])
    assert info["class_names"] == ["cold", "hot", "mild"]
    assert info["preprocessing"]["feature_names"][0] == "city=lima"
    assert job["result"]["students"][0]["test_accuracy"] > 0.6  # it learned the rule


def test_predict_writes_names_probabilities_and_accuracy(job: dict[str, Any]) -> None:
    out = job["root"] / "pred.csv"
    done = raykd("predict", job["dir"], job["csv"], "--out", out, cwd=job["root"])
    assert done.returncode == 0, done.stderr
    table = pd.read_csv(out)
    assert list(table.columns) == ["prediction", "prob_cold", "prob_hot", "prob_mild"]
    assert len(table) == 400 and set(table["prediction"]) <= {"cold", "hot", "mild"}
    np.testing.assert_allclose(table.filter(like="prob_").sum(axis=1), 1.0, atol=1e-5)
    accuracy = float((table["prediction"] == weather_frame(n=400)["outlook"]).mean())
    assert f"accuracy {accuracy:.4f} on 400 labelled rows" in done.stdout


def test_predict_names_a_missing_column(job: dict[str, Any]) -> None:
    path = job["root"] / "no_wind.csv"
    weather_frame(n=20, seed=5).drop(columns=["wind", "sky"]).to_csv(path, index=False)
    done = raykd("predict", job["dir"], path, "--out", job["root"] / "x.csv", cwd=job["root"])
    assert done.returncode == 2
    assert "lacks column(s) ['wind', 'sky']" in done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_predict_maps_an_unseen_category_to_other_with_a_warning(job: dict[str, Any]) -> None:
    frame = weather_frame(n=20, seed=6).drop(columns=["outlook"])
    frame.loc[:2, "city"] = "tokyo"
    path = job["root"] / "tokyo.parquet"
    frame.to_parquet(path)
    out = job["root"] / "tokyo.csv"
    done = raykd("predict", job["dir"], path, "--out", out, cwd=job["root"])
    assert done.returncode == 0, done.stderr
    assert "warning: column 'city': 1 value(s)" in done.stderr and "'tokyo'" in done.stderr
    assert "'(other)'" in done.stderr and "accuracy" not in done.stdout
    assert len(pd.read_csv(out)) == 20


def test_export_onnx_agrees_with_pytorch(job: dict[str, Any]) -> None:
    import onnxruntime as ort
    import torch

    from raykd.predict import load_student, table_inputs

    out = job["root"] / "student.onnx"
    done = raykd("export", job["dir"], "--format", "onnx", "--out", out, cwd=job["root"])
    assert done.returncode == 0, done.stderr + done.stdout
    assert "parity on the job's test split (80 rows)" in done.stdout and ": ok" in done.stdout
    side = json.loads((job["root"] / "student.preprocessing.json").read_text())
    assert side["class_names"] == ["cold", "hot", "mild"]
    # and independently of the command's own check, on the whole file
    student = load_student(job["dir"])
    x, _, _ = table_inputs(student, job["csv"])
    theirs = ort.InferenceSession(str(out)).run(["logits"], {"input": x})[0]
    with torch.no_grad():
        ours = student.model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(theirs, ours, atol=1e-4)


def test_export_safetensors_is_self_describing(job: dict[str, Any]) -> None:
    out = job["root"] / "alone.safetensors"
    done = raykd("export", job["dir"], "--format", "safetensors", "--out", out, cwd=job["root"])
    assert done.returncode == 0, done.stderr
    alone = job["root"] / "alone"
    alone.mkdir()
    moved = alone / out.name
    out.rename(moved)  # nothing beside it: the metadata must be enough
    done = raykd("predict", moved, job["csv"], "--out", alone / "p.csv", cwd=alone)
    assert done.returncode == 0, done.stderr
    reference = raykd("predict", job["dir"], job["csv"], "--out", alone / "ref.csv", cwd=alone)
    assert reference.returncode == 0, reference.stderr
    pd.testing.assert_frame_equal(pd.read_csv(alone / "p.csv"), pd.read_csv(alone / "ref.csv"))


def test_predict_on_a_missing_checkpoint_is_a_user_error(tmp_path: Path) -> None:
    done = raykd("predict", tmp_path / "nope", tmp_path / "x.csv", cwd=tmp_path)
    assert done.returncode == 2 and "neither a student checkpoint" in done.stderr
    assert "Traceback" not in done.stderr
