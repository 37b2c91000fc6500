"""Span extraction (SQuAD v2.0) jobs end to end: Hugging Face teachers trained in their actors
on token windows, their span logits cached unpadded, none/KD/WKD students with every softmax
masked to the valid positions, SQuAD EM/F1 per question (threshold chosen on val) checked
against the saved models, per-epoch val F1, and one tokenizer for every model.

Tiny random BERTs (2 layers, width 32) with the packaged MiniLM tokenizer, windows of 64
tokens overlapping by 16, a SQuAD v2.0 file of 150 questions written here (a third of them
unanswerable, every context longer than one window).
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from raykd.cli import app
from raykd.core.spec import parse_spec
from raykd.data import DataError, load_dataset
from raykd.data.span_data import window_accuracy
from raykd.engine import run_job
from raykd.metrics.squad import span_row
from raykd.models import load_checkpoint
from raykd.teachers.cache import LogitCache
from raykd.teachers.span_cache import PackedSpans, pack
from raykd.train.steps import predict_logits
from tests.helpers.text import TINY, TOKENIZER, WINDOWS, copy_tokenizer, span_spec, squad_file

pytestmark = pytest.mark.ray

@pytest.fixture(scope="module")
def storage(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("span-storage")


@pytest.fixture(scope="module")
def source(storage: Path) -> Path:
    return squad_file(storage / "owners.json")


@pytest.fixture(scope="module")
def data(source: Path) -> Any:
    return load_dataset(source, tokenizer=TOKENIZER, seed=0, **WINDOWS)


@pytest.fixture(scope="module")
def first(ray_local: None, storage: Path, source: Path) -> dict[str, Any]:
    return run_job(parse_spec(span_spec(storage, source, "owners")), job_dir=storage / "owners")


def as_cached(logits: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Logits as the cache keeps them: float16 at the valid positions (row 3 of x)."""
    return pack(logits, x[:, 3].astype(bool)).unpack(np.arange(len(logits)))[0]


def flat(row: dict[str, Any]) -> dict[str, Any]:
    """A ``span`` row with its ``test`` scores lifted to ``test.<name>`` keys."""
    return {**{k: v for k, v in row.items() if k != "test"},
            **{f"test.{k}": v for k, v in row["test"].items()}}


def test_span_windows_are_the_jobs_data(data: Any) -> None:
    assert data.input_shape == (4, 64) and data.num_classes == 64
    questions = {s: len(p.examples) for s, p in data.spans.parts.items()}
    assert sum(questions.values()) == 150
    for split in ("train", "val", "test"):
        part = getattr(data, split)
        assert part.x.dtype == np.int64 and part.y.shape == (len(part), 2)
        assert len(part) > questions[split]  # contexts longer than one window
        windows = data.spans.parts[split].windows
        np.testing.assert_array_equal(part.x[:, 3].astype(bool), windows.valid)
        assert (part.y == 0).all(axis=1).any() and (part.y > 0).all(axis=1).any()
    # split by passage: no context's questions in two splits
    contexts = {s: {ex.context for ex in p.examples} for s, p in data.spans.parts.items()}
    assert not contexts["train"] & contexts["test"] and not contexts["train"] & contexts["val"]
    assert not contexts["val"] & contexts["test"]


@pytest.mark.slow
def test_a_span_job_reports_what_its_saved_models_score(first: dict[str, Any], data: Any) -> None:
    assert first["dataset"]["num_classes"] == 64 and first["dataset"]["spans"]["max_length"] == 64
    from raykd.console_text import score_column  # the table raykd run prints: EM / F1 per row

    header, values = score_column(first)  # type: ignore[misc]
    test = first["students"][0]["span"]["test"]
    assert header == "test EM / F1" and values[3] == f"{test['exact']:.1f} / {test['f1']:.1f}"
    stats = first["logit_cache"]["teacher"]["train"]
    assert stats["teacher_forward_examples"] == 2 * len(data.train)
    per_window = stats["bytes_per_window_per_teacher"]
    assert 0 < per_window < 0.6 * 8 * 64  # unpadded fp16 vs padded float32 start/end logits
    tests = []
    for t in first["teachers"]:
        assert t["trained_by_raykd"]
        model = load_checkpoint(t["checkpoint"])
        val = as_cached(predict_logits(model, data.val.x), data.val.x)
        test = as_cached(predict_logits(model, data.test.x), data.test.x)
        tests.append(test)
        assert flat(t["span"]) == pytest.approx(flat(span_row(val, test, data.spans)))
        assert t["test_accuracy"] == pytest.approx(window_accuracy(test, data.test.x, data.test.y))
        assert set(t["span"]["test"]) >= {"exact", "f1", "HasAns_f1", "NoAns_f1", "threshold"}
    assert [s["label"] for s in first["students"]] == ["none", "kd", "wkd W=0.75"]
    for s in first["students"]:
        gen = s["generations"][0]
        model = load_checkpoint(gen["checkpoint"])
        val, test = predict_logits(model, data.val.x), predict_logits(model, data.test.x)
        assert flat(s["span"]) == pytest.approx(flat(span_row(val, test, data.spans)))
        f1 = [row["val_f1"] for row in gen["history"]]
        assert len(f1) == 2 and all(0.0 <= v <= 100.0 for v in f1)
        assert gen["best_epoch"] == 1 + int(np.argmax(f1))
        assert s["span"]["val_f1"] == pytest.approx(max(f1))
        assert {"val_exact", "val_accuracy"} <= set(gen["history"][0])


@pytest.mark.slow
def test_span_events_carry_squad_scores(first: dict[str, Any], storage: Path) -> None:
    lines = (storage / "owners" / "events.jsonl").read_text().splitlines()
    events = [json.loads(line) for line in lines]
    ready = [e for e in events if e["type"] == "teacher_ready"]
    finished = [e for e in events if e["type"] == "student_finished"]
    assert [e["test_f1"] for e in ready] == [t["span"]["test"]["f1"] for t in first["teachers"]]
    exact = [s["span"]["test"]["exact"] for s in first["students"]]
    assert [e["test_exact"] for e in finished] == exact
    epochs = [e for e in events if e["type"] == "epoch"]
    assert epochs and all("val_f1" in e["metrics"] for e in epochs)


@pytest.mark.slow
def test_a_second_span_job_reads_every_teachers_logits_from_the_cache(
        first: dict[str, Any], storage: Path, source: Path, data: Any) -> None:
    spec = span_spec(storage, source, "owners-again",
                     methods=[{"method": "wkd", "incorrect_weight": 0.5}])
    again = run_job(parse_spec(spec), job_dir=storage / "owners-again")
    assert not any(t["trained_by_raykd"] for t in again["teachers"])
    for split in ("train", "val", "test"):
        stats = again["logit_cache"]["teacher"][split]
        assert stats["cache_hits"] == 2 and stats["teacher_forward_examples"] == 0
    assert [t["span"] for t in again["teachers"]] == [t["span"] for t in first["teachers"]]
    cache = LogitCache(storage / "cache")
    key = again["logit_cache"]["teacher"]["test"]["cache_keys"][0]
    entry = cache.get(key)
    assert isinstance(entry, PackedSpans) and len(entry) == len(data.test)
    stored, mask = entry.unpack(np.arange(len(entry)))
    valid = data.test.x[:, 3].astype(bool)
    np.testing.assert_array_equal(mask, valid)
    logits = predict_logits(load_checkpoint(first["teachers"][0]["checkpoint"]), data.test.x)
    fp16 = logits.transpose(0, 2, 1)[valid].astype(np.float16).astype(np.float32)
    np.testing.assert_array_equal(stored.transpose(0, 2, 1)[valid], fp16)


def test_a_teacher_with_another_tokenizer_fails_in_one_line(tmp_path: Path, source: Path) -> None:
    other = copy_tokenizer(tmp_path / "tokenizer")
    config = json.loads((other / "tokenizer_config.json").read_text())
    (other / "tokenizer_config.json").write_text(json.dumps({**config, "do_lower_case": False}))
    spec = span_spec(tmp_path, source, "bad")
    spec["teachers"][1] = {"model": {"name": "hf", "config": TINY, "tokenizer": str(other)}}
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(spec))
    result = CliRunner().invoke(app, ["run", str(path)])
    assert result.exit_code == 2, result.output
    assert "span tasks need one tokenizer: teachers[1].model" in result.output
    assert "Traceback" not in result.output


def test_windows_longer_than_the_models_positions_fail_in_one_line(tmp_path: Path,
                                                                   source: Path) -> None:
    spec = span_spec(tmp_path, source, "long")
    spec["data"] = {**spec["data"], "max_length": 600, "doc_stride": 128}
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(spec))
    result = CliRunner().invoke(app, ["run", str(path)])
    assert result.exit_code == 2, result.output
    assert "data.max_length=600: teachers[0].model has position embeddings for 512 tokens" \
        in result.output and "Traceback" not in result.output


def test_window_sizes_are_for_span_data_only() -> None:
    with pytest.raises(DataError, match="data.doc_stride applies to span data only"):
        load_dataset("digits", doc_stride=32)


def test_bbc_speakers_is_a_span_job_dataset() -> None:
    data = load_dataset("bbc-speakers", tokenizer=TOKENIZER, max_length=128, doc_stride=32,
                        train_limit=20, seed=0)
    assert data.name == "bbc-speakers" and data.input_shape == (4, 128) and data.num_classes == 128
    train = data.spans.parts["train"].examples
    assert len(train) == 20
    # train_limit draws its questions by the seed: not the first 20 of one class, all answerable
    assert any(ex.is_impossible for ex in train) and len({ex.id.split("/")[0] for ex in train}) > 1
    for split in ("train", "val", "test"):
        part = getattr(data, split)
        assert part.x.shape[1:] == (4, 128) and part.y.shape == (len(part), 2)
        valid = part.x[:, 3].astype(bool)
        rows = np.arange(len(part))
        assert valid[:, 0].all()
        assert valid[rows, part.y[:, 0]].all() and valid[rows, part.y[:, 1]].all()


@pytest.mark.slow
def test_predict_spans_answers_as_the_job_scored(first: dict[str, Any], data: Any,
                                                 storage: Path, tmp_path: Path) -> None:
    """``raykd predict JOB_DIR questions.json --student kd`` writes the official predictions
    JSON, which scores what the job measured; ONNX export of a span student says what to use."""
    from raykd.metrics.squad import score_texts

    examples = data.spans.parts["test"].examples
    questions = {"version": "v2.0", "data": [{"title": "t", "paragraphs": [
        {"context": ex.context, "qas": [{"id": ex.id, "question": ex.question}]}
        for ex in examples]}]}
    (tmp_path / "questions.json").write_text(json.dumps(questions))
    student = first["students"][1]
    out = tmp_path / "predictions.json"
    result = CliRunner().invoke(app, ["predict", str(storage / "owners"),
                                      str(tmp_path / "questions.json"), "--student",
                                      student["label"], "--out", str(out)])
    assert result.exit_code == 0 and "answers to the questions" in result.output, result.output
    predictions = json.loads(out.read_text())
    assert list(predictions) == [ex.id for ex in examples]
    scores = score_texts([predictions[ex.id] for ex in examples], list(examples))
    assert scores["f1"] == pytest.approx(student["span"]["test"]["f1"])
    assert scores["exact"] == pytest.approx(student["span"]["test"]["exact"])
    result = CliRunner().invoke(app, ["export", str(storage / "owners"), "--format", "onnx",
                                      "--out", str(tmp_path / "s.onnx")])
    assert result.exit_code == 2, result.output
    assert "span (question answering) student" in result.output


def test_jsonl_and_parquet_rows_are_span_data_like_the_json(tmp_path: Path, source: Path,
                                                            data: Any) -> None:
    import pandas as pd

    rows = [{"id": qa["id"], "title": article["title"], "question": qa["question"],
             "context": paragraph["context"],
             "answers": {"text": [a["text"] for a in qa["answers"]],
                         "answer_start": [a["answer_start"] for a in qa["answers"]]}}
            for article in json.loads(source.read_text())["data"]
            for paragraph in article["paragraphs"] for qa in paragraph["qas"]]
    (tmp_path / "owners.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    pd.DataFrame(rows).to_parquet(tmp_path / "owners.parquet")
    for name in ("owners.jsonl", "owners.parquet"):
        other = load_dataset(tmp_path / name, tokenizer=TOKENIZER, seed=0, **WINDOWS)
        assert other.spans is not None and other.input_shape == (4, 64)
        for split in ("train", "val", "test"):
            assert getattr(other, split).fingerprint == getattr(data, split).fingerprint


@pytest.mark.slow
def test_a_span_sweep_ranks_trials_by_squad_f1_and_its_final_student_answers_as_scored(
        first: dict[str, Any], storage: Path, source: Path, data: Any, tmp_path: Path) -> None:
    """Trials over W read the teachers' cached span logits (no forward pass), are ranked by
    SQuAD val F1 (not window accuracy), and the final student's test EM/F1, its checkpoint's
    no-answer threshold and ``raykd predict`` on the sweep's directory all agree."""
    import pandas as pd

    from raykd.metrics.squad import score_texts
    from raykd.models import checkpoint_info
    from raykd.tune import print_sweep, run_sweep

    spec = span_spec(storage, source, "owners-sweep",
                     methods=[{"method": "wkd", "temperature": 2.0, "alpha": 0.5}],
                     sweep={"searcher": "grid", "scheduler": "fifo",
                            "incorrect_weight": {"values": [0.25, 1.0]}})
    job_dir = storage / "owners-sweep"
    result = run_sweep(parse_spec(spec), job_dir=job_dir, log=lambda _: None)

    assert result["metric"] == "val_f1"
    assert result["logit_cache"]["teacher"]["train"]["cache_hits"] == 2
    trials = result["trials"]
    assert sorted(t["incorrect_weight"] for t in trials) == [0.25, 1.0]
    assert all(0.0 <= t["val_f1"] <= 100.0 and t["teacher_forward_examples"] == 0 for t in trials)
    assert result["best"]["trial_id"] == max(trials, key=lambda t: t["val_f1"])["trial_id"]
    table = pd.read_csv(result["files"]["trials"])
    assert {"val_f1", "val_exact", "best_val_f1"} <= set(table.columns)
    assert sorted(table["val_f1"]) == pytest.approx(sorted(t["val_f1"] for t in trials))

    final = result["final"]
    model = load_checkpoint(final["checkpoint"])
    val, test = predict_logits(model, data.val.x), predict_logits(model, data.test.x)
    assert flat(final["span"]) == pytest.approx(flat(span_row(val, test, data.spans)))
    meta = checkpoint_info(final["checkpoint"])
    assert meta["preprocessing"]["null_threshold"] == pytest.approx(final["span"]["threshold"])
    assert (Path(final["hf_folder"]) / "model.safetensors").is_file()
    config = json.loads((Path(final["hf_folder"]) / "config.json").read_text())
    assert config["raykd_null_threshold"] == pytest.approx(final["span"]["threshold"])
    events = [json.loads(line) for line in (job_dir / "events.jsonl").read_text().splitlines()]
    reported = [e["metrics"] for e in events if e["type"] == "trial"]
    assert reported and all(0.0 <= m["val_f1"] <= 100.0 and "val_exact" in m for m in reported)
    shown = io.StringIO()
    print_sweep(result, file=shown)
    assert "val F1" in shown.getvalue() and "arg-max of val_f1" in shown.getvalue()
    assert f"test F1 {final['span']['test']['f1']:.2f}" in shown.getvalue()

    examples = data.spans.parts["test"].examples
    questions = {"version": "v2.0", "data": [{"title": "t", "paragraphs": [
        {"context": ex.context, "qas": [{"id": ex.id, "question": ex.question}]}
        for ex in examples]}]}
    (tmp_path / "questions.json").write_text(json.dumps(questions))
    out = tmp_path / "predictions.json"
    cli = CliRunner().invoke(app, ["predict", str(job_dir), str(tmp_path / "questions.json"),
                                   "--out", str(out)])
    assert cli.exit_code == 0, cli.output
    predictions = json.loads(out.read_text())
    scores = score_texts([predictions[ex.id] for ex in examples], list(examples))
    assert scores["f1"] == pytest.approx(final["span"]["test"]["f1"])


def test_a_base_model_given_as_is_is_refused(tmp_path: Path, source: Path) -> None:
    """fine_tune: false on a folder without a trained QA head would serve a random head."""
    spec = span_spec(tmp_path, source, "base")
    spec["teachers"][0] = {"model": {"name": "hf", "path": TOKENIZER, "num_hidden_layers": 1},
                           "fine_tune": False}
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(spec))
    result = CliRunner().invoke(app, ["run", str(path)])
    assert result.exit_code == 2, result.output
    assert "needs a folder with a trained *ForQuestionAnswering head" in result.output
