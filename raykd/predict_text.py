"""A text student (``name: hf`` on text) on new texts, and as ONNX.

- :func:`predict_text`: the texts of a ``.txt`` file (one text per line, blank lines
  skipped; single texts only), or of a ``.csv``/``.parquet``/``.jsonl`` file's text
  column(s) as the job named them (``TextPrep.columns``), through the model's own tokenizer
  (the model reads raw UTF-8 bytes, :mod:`raykd.data.text_bytes`): predicted class names
  and probabilities, and the accuracy when the file has the label column.
- :func:`export_text_onnx`: ONNX cannot hold a tokenizer, so the exported graph is the
  transformer itself, ``(input_ids, attention_mask[, token_type_ids]) -> logits``, with
  a dynamic batch and length (up to the model's ``max_length``); beside it the tokenizer
  folder (``<stem>.tokenizer/``) and ``<stem>.preprocessing.json`` saying how to
  tokenize (truncation to ``max_length``, pairs in order). The parity check tokenizes the
  same texts once and feeds both ONNX Runtime and PyTorch.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from raykd.artifact import (
    ArtifactError,
    Parity,
    Prediction,
    Student,
    job_record,
    need_onnx,
    probabilities,
    with_accuracy,
)
from raykd.core.spec import JobSpec
from raykd.data import DataError, raw_test_rows
from raykd.data.paths import open_data
from raykd.data.text_bytes import encode_texts
from raykd.data.text_files import read_text_file, text_values
from raykd.data.text_prep import MAX_TEXT_BYTES
from raykd.models.hf import CHARS_PER_TOKEN, model_inputs, save_tokenizer


def read_texts(student: Student, data: Path) -> tuple[list[str] | list[tuple[str, ...]], Any]:
    """The texts of ``data`` (see the module docstring) and its labels (a Series) or None."""
    text = student.text
    assert text is not None
    if data.suffix.lower() == ".txt":
        if len(text.columns) != 1:
            raise DataError(f"{str(data)!r}: a .txt file holds one text per line, but "
                            f"{student.title} reads pairs ({list(text.columns)}); give a "
                            ".csv/.parquet/.jsonl file with those columns")

        with open_data(data, "text file") as f:  # checked once opened (data roots, links)
            lines = f.read().decode("utf-8", errors="replace").splitlines()
        return [line for line in lines if line.strip()], None
    frame = read_text_file(data)
    missing = [c for c in text.columns if c not in frame.columns]
    if missing:
        raise DataError(f"{str(data)!r} has no column {missing[0]!r}, which {student.title} reads "
                        f"(text columns {list(text.columns)}); columns found: "
                        f"{list(frame.columns)[:20]}")
    slots = [text_values(frame[c], "text column", repr(str(data))) for c in text.columns]
    for name, values in zip(text.columns, slots, strict=True):
        empty = [i for i, t in enumerate(values) if not t.strip()]
        if empty:
            raise DataError(f"text column {name!r} of {str(data)!r}: {len(empty)} row(s) have no "
                            f"text (first at data row {empty[0] + 1}); fill or remove them")
    rows = list(zip(*slots, strict=True))
    labels = frame[text.label_column] if text.label_column in frame.columns else None
    return ([r[0] for r in rows] if len(slots) == 1 else rows), labels


def predict_text(student: Student, data: Path) -> Prediction:
    """Predicted class names and probabilities for every text of ``data``."""
    texts, labels = read_texts(student, data)
    if not texts:
        raise DataError(f"{str(data)!r} holds no text to predict; give at least one")
    probs = probabilities(student.model, text_bytes(texts))
    names = [student.class_names[i] for i in probs.argmax(axis=1)]
    return with_accuracy(Prediction(names=names, probabilities=probs), labels)


def text_bytes(texts: list[str] | list[tuple[str, ...]]) -> np.ndarray:
    """``texts`` as the bytes a job's data holds them (:func:`raykd.data.text_bytes.encode_texts`),
    each cut at :data:`raykd.data.text_prep.MAX_TEXT_BYTES` as a job's byte width is: the width
    is the longest text's, at most that cap, so one huge line does not cost N x its length."""
    longest = max([1, *(len(t.replace("\0", "").encode("utf-8", errors="replace"))
                        for r in texts for t in ([r] if isinstance(r, str) else r))])
    return encode_texts(texts, width=min(MAX_TEXT_BYTES, longest))


def _inner(student: Student) -> tuple[Any, int]:
    """The transformer and max_length of a text student (ArtifactError for another model)."""
    model = getattr(student.model, "hf", None)
    if model is None or getattr(student.model, "tokenizer", None) is None:
        raise ArtifactError(f"{student.title} is not a Hugging Face text model")
    return model, int(student.model.max_length)


def export_inputs(student: Student, texts: list[str] | list[tuple[str, ...]]
                  ) -> dict[str, np.ndarray]:
    """The int64 token arrays the exported graph reads for ``texts``, in its input order:
    :func:`raykd.models.hf.model_inputs` of the texts' bytes, the very tensors the student's
    forward gives its transformer in training."""
    _inner(student)
    enc = model_inputs(student.model, text_bytes(texts))
    return {k: np.ascontiguousarray(v.numpy(), dtype=np.int64) for k, v in enc.items()}


def export_text_onnx(student: Student, out: Path) -> tuple[Path, Path, Path]:
    """Write the graph, the tokenizer folder and the record (see the module docstring)."""
    import torch

    need_onnx()
    model, max_length = _inner(student)
    sample = export_inputs(student, ["raykd exports a text student", "two texts"]
                           if len(student.input_shape) and student.input_shape[0] == 1
                           else [("raykd exports", "a text pair"), ("two", "pairs")])
    names = list(sample)

    class Graph(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.hf = model

        def forward(self, *tokens: torch.Tensor) -> torch.Tensor:
            return self.hf(**dict(zip(names, tokens, strict=True))).logits.float()

    batch = torch.export.Dim("batch", min=1)
    length = torch.export.Dim("length", min=2, max=max(3, max_length))
    out.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():  # the exporter's own notices, not the user's
        warnings.simplefilter("ignore")
        torch.onnx.export(Graph().eval(), tuple(torch.from_numpy(sample[k]) for k in names),
                          str(out), input_names=names, output_names=["logits"],
                          dynamic_shapes=(tuple({0: batch, 1: length} for _ in names),),
                          dynamo=True, verbose=False, optimize=True, external_data=False)
    folder = save_tokenizer(student.model, out.with_name(f"{out.stem}.tokenizer"))
    side = out.with_name(f"{out.stem}.preprocessing.json")
    record = {"class_names": list(student.class_names), "inputs": names, "output": "logits",
              "input_is": f"token ids: tokenize with the folder {folder.name} beside this file, "
                          f"truncation=True, max_length={max_length}, padding to the batch's "
                          "longest (text pairs: tokenizer(text, text_pair))",
              "max_length": max_length,
              "text_cut": f"raykd first cuts each text to {CHARS_PER_TOKEN} x max_length "
                          "characters (changes the tokens only for texts of longer tokens)",
              "preprocessing": student.prep_record}
    side.write_text(json.dumps(record, indent=2))
    return out, folder, side


def text_parity(student: Student, onnx_path: Path, data: Path | None) -> Parity:
    """ONNX Runtime against PyTorch on the same tokenized texts: the file's, else the job's
    test split (its data re-read and split by its seed and fractions)."""
    import torch

    ort = need_onnx()
    texts = (read_texts(student, data)[0] if data is not None else job_test_texts(student))[:256]
    source = (f"{data.name} ({len(texts)} texts)" if data is not None
              else f"the job's test split ({len(texts)} texts)")
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    theirs, ours = [], []
    for start in range(0, len(texts), 32):
        tokens = export_inputs(student, texts[start:start + 32])
        theirs.append(session.run(["logits"], tokens)[0])
        with torch.no_grad():
            model, _ = _inner(student)
            ours.append(model(**{k: torch.from_numpy(v) for k, v in tokens.items()})
                        .logits.float().numpy())
    a, b = np.concatenate(theirs), np.concatenate(ours)
    return Parity(source=source, rows=len(a), max_abs_diff=float(np.abs(a - b).max()),
                  argmax_agreement=float(np.mean(a.argmax(1) == b.argmax(1))))


def job_test_texts(student: Student) -> list[str] | list[tuple[str, ...]]:
    """The test texts of the student's job (a bare checkpoint: give --data)."""
    record = None if student.job_dir is None else job_record(student.job_dir)
    if record is None:
        raise ArtifactError(f"{student.title} is a bare checkpoint: give --data FILE (.txt, .csv, "
                            ".parquet or .jsonl texts) for the parity check")
    d = JobSpec.model_validate(record["spec"]).data
    texts, _ = raw_test_rows(d.dataset, val_fraction=d.val_fraction, test_fraction=d.test_fraction,
                             seed=d.seed, label_column=d.label_column, text_column=d.text_column,
                             text_pair_column=d.text_pair_column)
    return list(texts)
