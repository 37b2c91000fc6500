"""A job on an image folder end to end on a real local Ray, then ``raykd predict`` on new images
(a folder, unlabelled images, a file that is not an image, a Parquet of images) by name.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from raykd.core.spec import parse_spec
from tests.helpers.cli import cli, raykd_process
from tests.helpers.data import digit_folder, digit_parquet
from tests.helpers.specs import digits_spec


@pytest.fixture(scope="module")
def job(ray_local: None, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One small job on a folder of 3 x 40 digit PNGs: two CNN teachers, an MLP student."""
    from raykd.engine import run_job

    root = tmp_path_factory.mktemp("images")
    folder = digit_folder(root / "digits", per_class=40)
    spec = parse_spec(
        digits_spec(
            str(root / "runs"),
            name="digit-images",
            data={"dataset": str(folder), "seed": 0},
            teachers=[{"model": {"name": "cnn", "width": 4}, "seed": s} for s in (1, 2)],
            teacher_train={"epochs": 10, "batch_size": 16, "lr": 0.01},
            student={"model": {"name": "mlp", "hidden": [16]}},
            train={"epochs": 10, "batch_size": 16, "lr": 0.01},
        )
    )
    result = run_job(spec, job_dir=root / "runs" / "job", log=lambda _: None)
    return {"result": result, "root": root, "dir": root / "runs" / "job"}


@pytest.mark.slow
@pytest.mark.ray
def test_a_job_on_an_image_folder_learns_the_classes(job: dict[str, Any]) -> None:
    from raykd.models import checkpoint_info

    result = job["result"]
    assert result["dataset"]["class_names"] == ["one", "two", "zero"]
    assert result["dataset"]["train"] + result["dataset"]["val"] + result["dataset"]["test"] == 120
    assert all(t["test_accuracy"] > 0.8 for t in result["teachers"])
    assert result["students"][0]["test_accuracy"] > 0.8
    info = checkpoint_info(result["students"][0]["generations"][0]["checkpoint"])
    assert info["class_names"] == ["one", "two", "zero"] and tuple(info["input_shape"]) == (
        1,
        16,
        16,
    )
    assert info["preprocessing"]["format"] == "raykd-image-preprocessing"
    assert info["preprocessing"]["mode"] == "L" and info["preprocessing"]["image_size"] == [16, 16]
    assert (job["dir"] / "preprocessing.json").is_file()


@pytest.mark.slow
@pytest.mark.ray
def test_predict_on_a_folder_of_new_images_gives_class_names(job: dict[str, Any]) -> None:
    new = digit_folder(job["root"] / "new", per_class=15, start=100)  # not in the training set
    out = job["root"] / "pred.csv"
    done = cli("predict", job["dir"], new, "--out", out)
    assert done.exit_code == 0, done.output
    table = pd.read_csv(out)
    assert list(table.columns) == ["file", "prediction", "prob_one", "prob_two", "prob_zero"]
    assert len(table) == 45 and set(table["prediction"]) <= {"one", "two", "zero"}
    np.testing.assert_allclose(table.filter(like="prob_").sum(axis=1), 1.0, atol=1e-5)
    truth = table["file"].str.split("/").str[0]
    accuracy = float((table["prediction"] == truth).mean())
    assert accuracy > 0.8
    assert f"accuracy {accuracy:.4f} on 45 labelled rows" in done.stdout


@pytest.mark.slow
@pytest.mark.ray
def test_predict_on_unlabelled_images_and_a_file_that_is_not_an_image(job: dict[str, Any]) -> None:
    flat = digit_folder(job["root"] / "flat", per_class=3, start=150, flat=True)
    out = job["root"] / "flat.csv"
    done = cli("predict", job["dir"], flat, "--out", out)
    assert done.exit_code == 0, done.output
    assert len(pd.read_csv(out)) == 9 and "accuracy" not in done.stdout
    (flat / "bad.jpg").write_bytes(b"\xff\xd8 truncated")
    done = raykd_process("predict", job["dir"], flat, "--out", out, cwd=job["root"])
    assert done.returncode == 2 and "bad.jpg" in done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1


@pytest.mark.slow
@pytest.mark.ray
def test_predict_on_a_parquet_of_images_matches_the_folder(job: dict[str, Any]) -> None:
    from raykd.predict import load_student, predict_file

    new = digit_folder(job["root"] / "new-pq", per_class=10, start=120)
    path = digit_parquet(new, job["root"] / "new.parquet")
    out = job["root"] / "pq.csv"
    done = cli("predict", job["dir"], path, "--out", out)
    assert done.exit_code == 0, done.output
    table = pd.read_csv(out)
    assert list(table.columns) == ["prediction", "prob_one", "prob_two", "prob_zero"]
    truth = pd.read_parquet(path)["label"]
    accuracy = float((table["prediction"] == truth).mean())
    assert accuracy > 0.8 and f"accuracy {accuracy:.4f} on 30 labelled rows" in done.stdout
    # the same images as a folder: the same probabilities, row for row
    student = load_student(job["dir"])
    order = np.random.default_rng(0).permutation(30)  # digit_parquet's shuffle
    np.testing.assert_allclose(
        table.filter(like="prob_").to_numpy(),
        predict_file(student, new).probabilities[order],
        atol=2e-6,
    )
