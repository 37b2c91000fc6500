"""Text and span students on Ray Train with 2 DDP workers (gloo on CPU), through the engine.

What a user would check: the job finishes on the ``train`` runner with 2 workers; each
worker stepped on half of the training rows each epoch (the global batch is cut over the
workers, so steps per epoch stay the same and rows per worker halve); the saved student,
both the raykd checkpoint and the Hugging Face folder (loaded by plain ``transformers``),
scores on the test split what the result reports (accuracy and macro-F1 for text, SQuAD
v2.0 F1/EM for spans).

Tiny random BERTs (width 32) with the packaged MiniLM tokenizer, one teacher, one method.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from raykd.core.spec import parse_spec
from raykd.engine import run_job
from raykd.models import load_checkpoint
from raykd.train.steps import accuracy, predict_logits
from tests.helpers.text import TINY, TOKENIZER, WINDOWS, macro_f1, span_spec, squad_file, text_spec

pytestmark = [pytest.mark.ray, pytest.mark.slow]

DDP = {"num_workers": 2, "student_runner": "train", "cpus_per_worker": 1}
TEACHER = {"model": {"name": "hf", "config": TINY, "tokenizer": TOKENIZER, "max_length": 32},
           "seed": 1}


@pytest.fixture(scope="module")
def storage(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("ddp-storage")


def events(job_dir: Path, kind: str) -> list[dict[str, Any]]:
    lines = (job_dir / "events.jsonl").read_text().splitlines()
    return [e for e in map(json.loads, lines) if e["type"] == kind]


def check_ddp_run(result: dict[str, Any], job_dir: Path, n_train: int, batch: int) -> None:
    """The one student ran on Ray Train, 2 workers, each on its half of every global batch."""
    (student,) = result["students"]
    gen = student["generations"][0]
    assert gen["runner"] == "train" and result["spec"]["scaling"]["num_workers"] == 2
    assert (job_dir / "ray_train").is_dir()
    rows = n_train // batch * batch // 2
    assert [(h["workers"], h["rows_per_worker"]) for h in gen["history"]] == [(2, rows)] * 2
    epochs = events(job_dir, "epoch")
    assert [e["metrics"]["workers"] for e in epochs] == [2.0, 2.0]
    assert [e["metrics"]["rows_per_worker"] for e in epochs] == [rows, rows]
    assert events(job_dir, "job_finished")


def test_a_text_student_on_two_ddp_workers(ray_local: None, storage: Path) -> None:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from raykd.data import load_dataset, raw_test_rows

    spec = text_spec(storage, "bbc-ddp", teachers=[TEACHER], scaling=DDP,
                     teacher_train={"epochs": 4, "batch_size": 16, "lr": 0.003},
                     methods=[{"method": "kd", "temperature": 2.0, "alpha": 0.5}])
    result = run_job(parse_spec(spec), job_dir=storage / "bbc-ddp")
    check_ddp_run(result, storage / "bbc-ddp", n_train=160, batch=16)
    data = load_dataset("bbc-news", train_limit=160, seed=0)
    student = result["students"][0]
    gen = student["generations"][0]

    logits = predict_logits(load_checkpoint(gen["checkpoint"]), data.test.x)
    assert student["test_accuracy"] == pytest.approx(accuracy(logits, data.test.y))
    assert student["test_macro_f1"] == pytest.approx(macro_f1(data.test.y, logits))

    folder = Path(gen["hf_folder"])  # written once, by the driver, from rank 0's weights
    assert (folder / "model.safetensors").is_file() and not list(folder.glob("*.bin"))
    hf = AutoModelForSequenceClassification.from_pretrained(folder, local_files_only=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    texts, labels = raw_test_rows("bbc-news", seed=0)
    np.testing.assert_array_equal(labels, data.test.y)
    with torch.no_grad():
        plain = np.concatenate([
            hf(**tokenizer(list(texts[i:i + 64]), truncation=True, max_length=32, padding=True,
                           return_tensors="pt")).logits.numpy()
            for i in range(0, len(texts), 64)])
    np.testing.assert_allclose(plain, logits, rtol=1e-4, atol=1e-4)
    assert accuracy(plain, labels) == pytest.approx(student["test_accuracy"])


def test_a_span_student_on_two_ddp_workers(ray_local: None, storage: Path) -> None:
    import torch
    from transformers import AutoModelForQuestionAnswering

    from raykd.data import load_dataset
    from raykd.metrics.squad import squad_scores

    source = squad_file(storage / "owners.json")
    teacher = {"model": {"name": "hf", "config": TINY, "tokenizer": TOKENIZER}, "seed": 1}
    spec = span_spec(storage, source, "owners-ddp", teachers=[teacher], scaling=DDP,
                     methods=[{"method": "wkd", "temperature": 2.0, "alpha": 0.5,
                               "incorrect_weight": 0.75}])
    result = run_job(parse_spec(spec), job_dir=storage / "owners-ddp")
    data = load_dataset(source, tokenizer=TOKENIZER, seed=0, **WINDOWS)
    check_ddp_run(result, storage / "owners-ddp", n_train=len(data.train), batch=16)
    student = result["students"][0]
    gen = student["generations"][0]
    val_part, test_part = data.spans.parts["val"], data.spans.parts["test"]

    model = load_checkpoint(gen["checkpoint"])
    val, test = predict_logits(model, data.val.x), predict_logits(model, data.test.x)
    threshold = squad_scores(val, val_part)["threshold"]
    assert student["span"]["threshold"] == pytest.approx(threshold)
    scores = squad_scores(test, test_part, threshold=threshold)
    assert student["span"]["test"]["f1"] == pytest.approx(scores["f1"])
    assert student["span"]["test"]["exact"] == pytest.approx(scores["exact"])

    hf = AutoModelForQuestionAnswering.from_pretrained(gen["hf_folder"], local_files_only=True)
    x = torch.from_numpy(data.test.x)
    with torch.no_grad():
        out = hf.eval()(input_ids=x[:, 0], attention_mask=x[:, 1], token_type_ids=x[:, 2])
    plain = torch.stack([out.start_logits, out.end_logits], dim=1).numpy()
    np.testing.assert_allclose(plain, test, rtol=1e-4, atol=1e-4)
    assert squad_scores(plain, test_part, threshold=threshold)["f1"] == pytest.approx(scores["f1"])
