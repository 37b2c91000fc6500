"""Text classification jobs end to end: Hugging Face teachers trained in their actors on BBC
News, their logits cached once, none/KD/WKD students, macro-F1, and the student as a plain
Hugging Face folder.

Tiny random BERTs (2 layers, width 32) with the packaged MiniLM tokenizer, 32 tokens, 160
training articles: what trains here is small; what is checked is what a user would check.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from raykd.cli import app
from raykd.core.spec import parse_spec
from raykd.engine import run_job
from raykd.models import load_checkpoint
from raykd.train.steps import accuracy, predict_logits
from tests.helpers.text import macro_f1, text_spec

pytestmark = pytest.mark.ray

@pytest.fixture(scope="module")
def storage(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("text-storage")


@pytest.fixture(scope="module")
def first(ray_local: None, storage: Path) -> dict[str, Any]:
    """The module's text job (about a minute on 2 cores: the tests that read it are slow)."""
    return run_job(parse_spec(text_spec(storage, "bbc-tiny")), job_dir=storage / "bbc-tiny")


@pytest.mark.slow
def test_a_text_job_reports_what_its_saved_models_score(first: dict[str, Any]) -> None:
    from raykd.data import load_dataset

    data = load_dataset("bbc-news", train_limit=160, seed=0)
    assert first["dataset"]["num_classes"] == 5 and len(data.train) == 160
    assert first["dataset"]["class_names"] == [
        "business", "entertainment", "politics", "sports", "tech"]
    assert first["logit_cache"]["teacher"]["train"]["teacher_forward_examples"] == 2 * 160
    test_logits = []
    for t in first["teachers"]:
        assert t["trained_by_raykd"]
        logits = predict_logits(load_checkpoint(t["checkpoint"]), data.test.x)
        test_logits.append(logits)
        assert t["test_accuracy"] == pytest.approx(accuracy(logits, data.test.y))
        assert t["test_macro_f1"] == pytest.approx(
            macro_f1(data.test.y, logits))
    # the teachers learned (5 classes, the most common is 21% of the test split)
    assert max(t["test_accuracy"] for t in first["teachers"]) > 0.3
    ensemble = np.mean(test_logits, axis=0)
    assert first["ensemble"]["test_macro_f1"] == pytest.approx(
        macro_f1(data.test.y, ensemble))
    assert [s["label"] for s in first["students"]] == ["none", "kd", "wkd W=0.75"]
    from raykd.console_text import score_column  # the table raykd run prints gets a macro-F1 column

    header, values = score_column(first)  # type: ignore[misc]
    assert header == "test F1" and values[0] == f"{first['teachers'][0]['test_macro_f1']:.4f}"
    assert values[-1] == f"{first['students'][-1]['test_macro_f1']:.4f}" and len(values) == 6
    for s in first["students"]:
        logits = predict_logits(load_checkpoint(s["generations"][0]["checkpoint"]), data.test.x)
        assert s["test_accuracy"] == pytest.approx(accuracy(logits, data.test.y))
        assert s["test_macro_f1"] == pytest.approx(
            macro_f1(data.test.y, logits))


@pytest.mark.slow
def test_the_student_is_a_hugging_face_folder_that_loads_without_raykd(
        first: dict[str, Any]) -> None:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    gen = first["students"][2]["generations"][0]
    folder = Path(gen["hf_folder"])
    assert (folder / "model.safetensors").is_file() and (folder / "config.json").is_file()
    assert not list(folder.glob("*.bin"))
    hf = AutoModelForSequenceClassification.from_pretrained(folder, local_files_only=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    assert hf.config.id2label[3] == "sports"
    texts = ["Shares rose after the bank's results.", "The striker scored twice in the final."]
    with torch.no_grad():
        plain = hf(**tokenizer(texts, truncation=True, max_length=32, padding=True,
                               return_tensors="pt")).logits.numpy()
    from raykd.data.text_bytes import encode_texts

    ours = predict_logits(load_checkpoint(gen["checkpoint"]), encode_texts(texts))
    np.testing.assert_allclose(plain, ours, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_a_second_text_job_takes_teachers_and_logits_from_the_cache(first: dict[str, Any],
                                                                     storage: Path) -> None:
    spec = text_spec(storage, "bbc-again", methods=[{"method": "kd", "temperature": 2.0}])
    again = run_job(parse_spec(spec), job_dir=storage / "bbc-again")
    assert not any(t["trained_by_raykd"] for t in again["teachers"])
    for split in ("train", "val", "test"):
        stats = again["logit_cache"]["teacher"][split]
        assert stats["cache_hits"] == 2 and stats["teacher_forward_examples"] == 0
    assert [t["test_accuracy"] for t in again["teachers"]] == [
        t["test_accuracy"] for t in first["teachers"]]


@pytest.mark.parametrize(("change", "message"), [
    ({"student": {"model": {"name": "mlp"}}},
     "student.model.name='mlp': dataset 'bbc-news' is text, which only Hugging Face models read"),
    ({"data": {"dataset": "digits"}},
     "teachers[0].model.name='hf' reads text, but dataset 'digits' is not text"),
    ({"data": {"dataset": "bbc-news", "augment": True}},
     "data.augment (random shifts and noise) applies to images and tables"),
])
def test_text_and_models_that_do_not_fit_fail_in_one_line(tmp_path: Path, change: dict[str, Any],
                                                         message: str) -> None:
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(text_spec(tmp_path, "bad", **change)))
    result = CliRunner().invoke(app, ["run", str(path)])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output


@pytest.mark.slow
def test_predict_and_export_a_text_student(first: dict[str, Any], storage: Path,
                                           tmp_path: Path) -> None:
    """``raykd predict`` on a CSV of texts gives what the job measured on the same texts;
    ``raykd export --format onnx`` writes the transformer, its tokenizer and a parity line."""
    import pandas as pd

    from raykd.data import raw_test_rows

    texts, labels = raw_test_rows("bbc-news", seed=0)
    names = first["dataset"]["class_names"]
    pd.DataFrame({"text": texts, "label": [names[i] for i in labels]}).to_csv(
        tmp_path / "news.csv", index=False)
    job_dir = storage / "bbc-tiny"
    out = tmp_path / "pred.csv"
    result = CliRunner().invoke(app, ["predict", str(job_dir), str(tmp_path / "news.csv"),
                                      "--student", "kd", "--out", str(out)])
    assert result.exit_code == 0, result.output
    kd = next(s for s in first["students"] if s["label"] == "kd")
    assert f"accuracy {kd['test_accuracy']:.4f} on {len(texts)} labelled rows" in result.output
    assert len(pd.read_csv(out)) == len(texts)
    (tmp_path / "lines.txt").write_text(
        "Shares fell on the stock market.\n\nThe match ended 2-1.\n")
    result = CliRunner().invoke(app, ["predict", str(job_dir), str(tmp_path / "lines.txt"),
                                      "--out", str(tmp_path / "lines.csv")])
    assert result.exit_code == 0 and "2 rows" in result.output, result.output

    onnx = tmp_path / "student.onnx"
    result = CliRunner().invoke(app, ["export", str(job_dir), "--format", "onnx",
                                      "--out", str(onnx)])
    assert result.exit_code == 0, result.output
    assert "parity on the job's test split (256 texts)" in result.output and ": ok" in result.output
    assert (tmp_path / "student.tokenizer" / "tokenizer.json").is_file()
    side = json.loads((tmp_path / "student.preprocessing.json").read_text())
    assert side["inputs"][:2] == ["input_ids", "attention_mask"] and side["max_length"] == 32


@pytest.mark.slow
def test_a_fine_tuned_folder_is_used_as_given_and_its_labels_must_match(
        first: dict[str, Any], storage: Path, tmp_path: Path) -> None:
    """``fine_tune: false``: the first job's student folder as a teacher scores what it scored
    there, untrained; the same folder with its labels in another order is refused."""
    import shutil

    folder = first["students"][1]["generations"][0]["hf_folder"]
    teacher = {"model": {"name": "hf", "path": folder, "max_length": 32}, "fine_tune": False}
    spec = text_spec(storage, "bbc-given", teachers=[teacher], methods=[{"method": "kd"}],
                     train={"epochs": 1, "batch_size": 16, "lr": 0.003})
    given = run_job(parse_spec(spec), job_dir=storage / "bbc-given")
    row = given["teachers"][0]
    assert not row["trained_by_raykd"] and row["train_seconds"] == 0
    assert row["test_accuracy"] == pytest.approx(first["students"][1]["test_accuracy"])

    swapped = tmp_path / "swapped"
    shutil.copytree(folder, swapped)
    config = json.loads((swapped / "config.json").read_text())
    names = [config["id2label"][str(i)] for i in range(5)]
    config["id2label"] = {str(i): n for i, n in enumerate([names[1], names[0], *names[2:]])}
    config["label2id"] = {n: int(i) for i, n in config["id2label"].items()}
    (swapped / "config.json").write_text(json.dumps(config))
    teacher["model"]["path"] = str(swapped)
    path = tmp_path / "swapped.json"
    path.write_text(json.dumps(text_spec(tmp_path, "bad-labels", teachers=[teacher])))
    result = CliRunner().invoke(app, ["run", str(path)])
    assert result.exit_code == 2, result.output
    assert "its head's labels ['entertainment', 'business'" in result.output
    assert "Traceback" not in result.output
