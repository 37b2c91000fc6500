"""A CSV a user brings, end to end on a real local Ray: ``raykd run``, then ``raykd predict``
(names and probabilities, clear errors, the unseen-category fallback) and ``raykd export``
(ONNX agrees with PyTorch; a self-describing safetensors file)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from tests.helpers.cli import cli, raykd_process
from tests.helpers.data import weather_frame
from tests.helpers.specs import digits_spec

pytestmark = pytest.mark.ray




def weather_spec(root: Path, csv: Path, **overrides: Any) -> dict[str, Any]:
    """Two small MLP teachers and an MLP student on the weather CSV, stored under root/runs."""
    return digits_spec(str(root / "runs"), **{
        "name": "weather", "data": {"dataset": str(csv), "label_column": "outlook", "seed": 0},
        "teachers": [{"model": {"name": "mlp", "hidden": [16]}, "seed": s} for s in (1, 2)],
        "teacher_train": {"epochs": 15, "batch_size": 32, "lr": 0.01},
        "student": {"model": {"name": "mlp", "hidden": [8]}},
        "train": {"epochs": 15, "batch_size": 32, "lr": 0.01}, **overrides})


@pytest.fixture(scope="module")
def job(ray_local: None, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One small job on a CSV with text classes, categories, an index column and gaps."""
    from raykd.core.spec import parse_spec
    from raykd.engine import run_job

    root = tmp_path_factory.mktemp("weather")
    csv = root / "weather.csv"
    weather_frame(n=400).to_csv(csv, index=False)
    spec = parse_spec(weather_spec(root, csv))
    result = run_job(spec, job_dir=root / "runs" / "job", log=lambda _: None)
    return {"result": result, "root": root, "csv": csv, "dir": root / "runs" / "job"}




@pytest.mark.slow
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


@pytest.mark.slow
def test_predict_writes_names_probabilities_and_accuracy(job: dict[str, Any]) -> None:
    out = job["root"] / "pred.csv"
    done = cli("predict", job["dir"], job["csv"], "--out", out)
    assert done.exit_code == 0, done.output
    table = pd.read_csv(out)
    assert list(table.columns) == ["prediction", "prob_cold", "prob_hot", "prob_mild"]
    assert len(table) == 400 and set(table["prediction"]) <= {"cold", "hot", "mild"}
    np.testing.assert_allclose(table.filter(like="prob_").sum(axis=1), 1.0, atol=1e-5)
    accuracy = float((table["prediction"] == weather_frame(n=400)["outlook"]).mean())
    assert f"accuracy {accuracy:.4f} on 400 labelled rows" in done.stdout


@pytest.mark.slow
def test_predict_names_a_missing_column(job: dict[str, Any]) -> None:
    path = job["root"] / "no_wind.csv"
    weather_frame(n=20, seed=5).drop(columns=["wind", "sky"]).to_csv(path, index=False)
    done = raykd_process("predict", job["dir"], path, "--out", job["root"] / "x.csv", cwd=job["root"])
    assert done.returncode == 2
    assert "lacks column(s) ['wind', 'sky']" in done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_predict_maps_an_unseen_category_to_other_with_a_warning(job: dict[str, Any]) -> None:
    frame = weather_frame(n=20, seed=6).drop(columns=["outlook"])
    frame.loc[:2, "city"] = "tokyo"
    path = job["root"] / "tokyo.parquet"
    frame.to_parquet(path)
    out = job["root"] / "tokyo.csv"
    done = cli("predict", job["dir"], path, "--out", out)
    assert done.exit_code == 0, done.output
    assert "warning: column 'city': 1 value(s)" in done.stderr and "'tokyo'" in done.stderr
    assert "'(other)'" in done.stderr and "accuracy" not in done.stdout
    assert len(pd.read_csv(out)) == 20


@pytest.mark.slow
def test_export_onnx_agrees_with_pytorch(job: dict[str, Any]) -> None:
    import onnxruntime as ort
    import torch

    from raykd.predict import load_student, table_inputs

    out = job["root"] / "student.onnx"
    done = cli("export", job["dir"], "--format", "onnx", "--out", out)
    assert done.exit_code == 0, done.output
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


@pytest.mark.slow
def test_export_safetensors_is_self_describing(job: dict[str, Any]) -> None:
    out = job["root"] / "alone.safetensors"
    done = cli("export", job["dir"], "--format", "safetensors", "--out", out)
    assert done.exit_code == 0, done.output
    alone = job["root"] / "alone"
    alone.mkdir()
    moved = alone / out.name
    out.rename(moved)  # nothing beside it: the metadata must be enough
    done = cli("predict", moved, job["csv"], "--out", alone / "p.csv")
    assert done.exit_code == 0, done.output
    reference = cli("predict", job["dir"], job["csv"], "--out", alone / "ref.csv")
    assert reference.exit_code == 0, reference.output
    pd.testing.assert_frame_equal(pd.read_csv(alone / "p.csv"), pd.read_csv(alone / "ref.csv"))


def test_predict_on_a_missing_checkpoint_is_a_user_error(tmp_path: Path) -> None:
    done = cli("predict", tmp_path / "nope", tmp_path / "x.csv")
    assert done.exit_code == 2 and "neither a student checkpoint" in done.stderr
    assert "Traceback" not in done.stderr


# --- a job's teachers and ensemble, the export's stored preprocessing, a sweep's student ---

@pytest.mark.slow
def test_predict_with_a_teacher_or_the_ensemble(job: dict[str, Any]) -> None:
    import torch

    from raykd.data import TablePrep
    from raykd.models import load_checkpoint

    # independently: the stored preprocessing, each teacher's logits, their plain average
    prep = TablePrep.from_dict(json.loads((job["dir"] / "preprocessing.json").read_text()), "prep")
    x = torch.from_numpy(prep.transform(pd.read_csv(job["csv"]), "csv")[0])
    with torch.no_grad():
        logits = torch.stack([load_checkpoint(t["checkpoint"])(x) for t in job["result"]["teachers"]])
    wanted = {"ensemble": torch.softmax(logits.double().mean(0), 1).numpy(),
              "teacher:1": torch.softmax(logits[1].double(), 1).numpy()}
    assert np.abs(wanted["ensemble"] - wanted["teacher:1"]).max() > 1e-3  # they can be told apart
    names = np.array(["cold", "hot", "mild"])
    for model, probs in wanted.items():
        out = job["root"] / f"{model.replace(':', '-')}.csv"
        done = cli("predict", job["dir"], job["csv"], "--out", out, "--model", model)
        assert done.exit_code == 0, done.output
        table = pd.read_csv(out)
        assert list(table.columns) == ["prediction", "prob_cold", "prob_hot", "prob_mild"]
        np.testing.assert_allclose(table.filter(like="prob_").to_numpy(), probs, atol=2e-6)
        assert table["prediction"].tolist() == names[probs.argmax(1)].tolist()
        assert "accuracy" in done.stdout
    assert done.stdout.startswith("teacher 1 (") and "teachers/teacher-1.safetensors" in done.stdout


@pytest.mark.slow
def test_predict_names_the_models_a_job_has(job: dict[str, Any]) -> None:
    label = job["result"]["students"][0]["label"]
    done = cli("predict", job["dir"], job["csv"], "--model", "teacher:7")
    assert done.exit_code == 2 and "Traceback" not in done.output
    assert (f"unknown model 'teacher:7' for job '{job['dir']}'; accepted: ['student', "
            f"'student:{label}', 'teacher:0', 'teacher:1', 'ensemble']") in done.stderr
    checkpoint = job["result"]["students"][0]["generations"][0]["checkpoint"]
    done = cli("predict", checkpoint, job["csv"], "--model", "ensemble")
    assert done.exit_code == 2 and "picks a model of a job directory" in done.stderr


@pytest.mark.slow
def test_export_parity_uses_the_stored_preprocessing_not_a_refit(job: dict[str, Any]) -> None:
    from raykd.export import parity_inputs
    from raykd.predict import load_student

    student = load_student(job["dir"])
    before, source = parity_inputs(student, None)
    assert source == "the job's test split (80 rows)"
    stored = (job["dir"] / "preprocessing.json").read_bytes()
    original = job["csv"].read_bytes()
    try:  # the data file changes after training: every temperature 100 degrees higher
        changed = weather_frame(n=400)
        changed["temp"] += 100.0
        changed.to_csv(job["csv"], index=False)
        after, _ = parity_inputs(load_student(job["dir"]), None)
    finally:
        job["csv"].write_bytes(original)
    assert student.prep is not None
    temp = next(c for c in student.prep.columns if c.name == "temp")
    column = student.prep.feature_names.index("temp")
    # scaled by the stored statistics, the same rows move by 100 / std; a refit would not move them
    np.testing.assert_allclose(after[:, column] - before[:, column], 100.0 / temp.std, rtol=1e-4)
    others = [i for i in range(after.shape[1]) if i != column]
    np.testing.assert_array_equal(after[:, others], before[:, others])
    assert (job["dir"] / "preprocessing.json").read_bytes() == stored


@pytest.fixture(scope="module")
def sweep(job: dict[str, Any]) -> dict[str, Any]:
    """A one-trial sweep on the same CSV and teachers (their weights and logits from the cache)."""
    from raykd.core.spec import parse_spec
    from raykd.tune import run_sweep

    spec = parse_spec(weather_spec(job["root"], job["csv"], name="weather-sweep",
                                   train={"epochs": 5, "batch_size": 32, "lr": 0.01},
                                   sweep={"searcher": "grid", "temperature": {"values": [2.0]}}))
    directory = job["root"] / "runs" / "sweep"
    return {"result": run_sweep(spec, job_dir=directory, log=lambda _: None), "dir": directory}


@pytest.mark.slow
def test_a_sweeps_final_student_carries_the_class_names(job: dict[str, Any],
                                                         sweep: dict[str, Any]) -> None:
    from raykd.models import checkpoint_info

    result = sweep["result"]
    assert result["dataset"]["class_names"] == ["cold", "hot", "mild"]
    assert [c["column"] for c in result["dataset"]["table"]["used"]] == ["city", "temp", "wind", "sky"]
    info = checkpoint_info(result["final"]["checkpoint"])
    assert info["class_names"] == ["cold", "hot", "mild"]
    assert info["preprocessing"]["feature_names"][0] == "city=lima"
    out = job["root"] / "sweep-pred.csv"
    done = cli("predict", sweep["dir"], job["csv"], "--out", out)  # the sweep's directory will do
    assert done.exit_code == 0, done.output
    assert done.stdout.startswith("student final (") and "best_student.safetensors" in done.stdout
    assert set(pd.read_csv(out)["prediction"]) <= {"cold", "hot", "mild"}


@pytest.fixture(scope="module")
def digits_job(ray_local: None, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A quick job on the built-in digits: one teacher, one student."""
    from raykd.core.spec import parse_spec
    from raykd.engine import run_job

    root = tmp_path_factory.mktemp("digits")
    spec = parse_spec(digits_spec(
        str(root / "runs"), teachers=[{"model": {"name": "mlp", "hidden": [32]}, "seed": 1}],
        teacher_train={"epochs": 2, "batch_size": 64, "lr": 0.003},
        train={"epochs": 2, "batch_size": 64, "lr": 0.003}))
    result = run_job(spec, job_dir=root / "runs" / "job", log=lambda _: None)
    return {"result": result, "root": root, "dir": root / "runs" / "job"}


@pytest.mark.slow
def test_a_digits_student_predicts_and_exports_on_raw_rows(digits_job: dict[str, Any]) -> None:
    """The training split's scaling is stored: raw rows (pixels 0..16, as scikit-learn gives
    them) score the job's own test accuracy through predict and through the ONNX export."""
    import onnxruntime as ort
    from sklearn.datasets import load_digits

    from raykd.data.splits import dataset_indices

    root, job_dir = digits_job["root"], digits_job["dir"]
    record = json.loads((job_dir / "preprocessing.json").read_text())
    assert record["format"] == "raykd-array-preprocessing" and record["divisor"] == 16.0
    digits = load_digits()
    test = dataset_indices(len(digits.target), carve_test=True, val_fraction=0.1, test_fraction=0.2,
                           seed=0, train_limit=None, where="digits")[2]
    assert test is not None
    raw, labels = digits.images[test], digits.target[test]
    np.savez(root / "raw.npz", x=raw, y=labels)
    expected = digits_job["result"]["students"][0]["test_accuracy"]
    done = cli("predict", job_dir, root / "raw.npz", "--out", root / "raw-pred.csv")
    assert done.exit_code == 0, done.output
    assert f"accuracy {expected:.4f} on {len(test)} labelled rows" in done.stdout
    assert len(pd.read_csv(root / "raw-pred.csv")) == len(test)
    # the exported model reads the raw rows: its scaling is inside; the parity check fed raw rows
    out = root / "digits.onnx"
    done = cli("export", job_dir, "--format", "onnx", "--out", out)
    assert done.exit_code == 0, done.output
    assert f"parity on the job's test split ({len(test)} rows)" in done.stdout and ": ok" in done.stdout
    side = json.loads((root / "digits.preprocessing.json").read_text())
    assert side["input_is"].startswith("raw") and side["preprocessing"] == record
    logits = ort.InferenceSession(str(out)).run(
        ["logits"], {"input": raw[:, None].astype(np.float32)})[0]
    assert float(np.mean(logits.argmax(axis=1) == labels)) == pytest.approx(expected, abs=1e-9)
    # a safetensors export alone (no job directory beside it) predicts the same
    alone = root / "alone"
    alone.mkdir()
    done = cli("export", job_dir, "--format", "safetensors", "--out", alone / "s.safetensors")
    assert done.exit_code == 0, done.output
    done = cli("predict", alone / "s.safetensors", root / "raw.npz", "--out", alone / "p.csv")
    assert done.exit_code == 0 and f"accuracy {expected:.4f}" in done.stdout, done.output


def test_a_span_jobs_default_student_is_the_one_of_the_best_val_f1(tmp_path: Path) -> None:
    """Window accuracy and SQuAD val F1 disagree: predict takes the F1 one (a run's students
    are otherwise picked by val accuracy)."""
    from raykd.core.jobdir import JobLayout
    from raykd.predict import find_student

    layout = JobLayout(tmp_path)
    layout.students.mkdir(parents=True)
    students = []
    for label, acc, f1 in (("kd", 0.9, 40.0), ("wkd", 0.6, 55.0)):
        ckpt = layout.students / f"{label}.safetensors"
        ckpt.write_bytes(b"")
        students.append({"label": label, "val_accuracy": acc, "span": {"val_f1": f1},
                         "generations": [{"checkpoint": str(ckpt)}]})
    (tmp_path / JobLayout.RESULT).write_text(json.dumps({"students": students}))
    assert find_student(tmp_path)[2] == "wkd"
    for s in students:
        del s["span"]
    (tmp_path / JobLayout.RESULT).write_text(json.dumps({"students": students}))
    assert find_student(tmp_path)[2] == "kd"
