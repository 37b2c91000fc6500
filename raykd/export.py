"""``raykd export``: a student as ONNX or as a self-describing safetensors file.

- **onnx**: the model with one input ``input`` of shape ``(batch, *input_shape)``
  (float32) and one output ``logits`` ``(batch, C)``, exported by ``torch.onnx.export``
  (the dynamo exporter; needs the ``export`` extra: onnx, onnxruntime, onnxscript). For a
  student of an ``.npz`` or a built-in dataset the input is the *raw* rows (digits'
  pixels 0..16, MNIST's 0..255, ...): the scaling ``((x / divisor) - mean) / std`` of
  :class:`~raykd.data.arrays.ArrayPrep` is inside the model. For a table or images the
  input is already preprocessed (one-hot columns, decoded and standardized pixels) by
  the record written beside it. Beside it in every case: ``<name>.preprocessing.json``,
  the record, the class names and ``input_is`` (``raw`` or ``preprocessed``).
  :func:`onnx_parity` then feeds ONNX Runtime the inputs a user would (raw rows for an
  array student) and PyTorch the same rows through the stored preprocessing (as ``raykd
  predict`` does), and reports the largest absolute difference of the logits and the
  share of rows whose arg-max agrees. The rows: a given file (table, ``.npz``, images),
  else the job's test split (the job's split, by its seed and fractions, of its data
  file or built-in dataset, through nothing refitted: a data file changed since
  training changes the rows, never the scaling or the categories), else, for a bare
  checkpoint, 256 standard-normal rows.
- **safetensors**: the weights with metadata ``raykd_model`` (architecture),
  ``input_shape``, ``num_classes``, ``class_names`` and ``preprocessing``: everything
  ``raykd predict`` needs, in one file.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any, Literal

import numpy as np

from raykd.artifact import (
    PARITY_TOLERANCE,
    ArtifactError,
    Parity,
    Student,
    job_record,
    need_onnx,
)
from raykd.core.spec import JobSpec
from raykd.data import load_dataset, raw_test_rows
from raykd.data.files import read_npz_rows
from raykd.data.image_parquet import open_parquet, read_labels
from raykd.data.images import folder_examples
from raykd.data.splits import dataset_indices
from raykd.data.tables import read_table
from raykd.models import save_checkpoint
from raykd.predict import image_inputs, parquet_image_inputs, table_inputs
from raykd.predict_text import export_text_onnx, text_parity

__all__ = [  # Parity and its tolerance stay importable from here
    "PARITY_TOLERANCE", "Parity", "export_onnx", "export_safetensors", "export_student",
    "job_test_inputs", "onnx_module", "onnx_parity", "parity_inputs",
]

def onnx_module(student: Student) -> Any:
    """What is exported: the student, behind its array scaling when it has one (raw inputs)."""
    import torch

    arrays = student.arrays
    if arrays is None:
        return student.model
    mean, std = arrays.stats()

    class RawInputs(torch.nn.Module):
        """``model(((x / divisor) - mean) / std)``, the float32 steps of ArrayPrep.transform."""

        def __init__(self) -> None:
            super().__init__()
            self.model = student.model
            self.register_buffer("divisor", torch.tensor(arrays.divisor, dtype=torch.float32))
            self.register_buffer("mean", torch.from_numpy(np.array(mean)))
            self.register_buffer("std", torch.from_numpy(np.array(std)))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.model((x / self.divisor - self.mean) / self.std)

    return RawInputs().eval()


def export_onnx(student: Student, out: Path) -> tuple[Path, Path]:
    """Write ``out`` (ONNX) and ``<out stem>.preprocessing.json``; return both paths."""
    import torch

    need_onnx()
    out.parent.mkdir(parents=True, exist_ok=True)
    example = torch.zeros((2, *student.input_shape), dtype=torch.float32)
    batch = torch.export.Dim("batch", min=1)
    with warnings.catch_warnings():  # the exporter's own deprecation notices, not the user's
        warnings.simplefilter("ignore")
        torch.onnx.export(onnx_module(student), (example,), str(out), input_names=["input"],
                          output_names=["logits"], dynamic_shapes=({0: batch},), dynamo=True,
                          verbose=False, optimize=True, external_data=False)
    side = out.with_name(f"{out.stem}.preprocessing.json")
    record = {"class_names": list(student.class_names), "input_shape": list(student.input_shape),
              "input": "input", "output": "logits",
              "input_is": ("raw: the scaling in 'preprocessing' is inside the model"
                           if student.arrays is not None else
                           "preprocessed: apply 'preprocessing' first, as raykd predict does"),
              "preprocessing": student.prep_record}
    side.write_text(json.dumps(record, indent=2))
    return out, side


def export_safetensors(student: Student, out: Path) -> Path:
    """The student's weights with its architecture, classes and preprocessing in the metadata."""
    return save_checkpoint(
        student.model, out, config=student.config, input_shape=student.input_shape,
        num_classes=len(student.class_names), class_names=student.class_names,
        preprocessing=student.prep_record,
        extra={"exported_from": str(student.checkpoint)},
    )


def parity_inputs(student: Student, data: Path | None) -> tuple[np.ndarray, str]:
    """The inputs of the parity check as the exported model reads them (raw rows for an array
    student) and how to name them (see the module docstring)."""
    if data is not None:
        if data.suffix.lower() == ".npz":
            x = read_npz_rows(data)[0]
        elif data.is_dir():
            x = image_inputs(student, data)[0]
        elif student.image is not None and data.suffix.lower() == ".parquet":
            x = parquet_image_inputs(student, data)[0]
        else:
            x = table_inputs(student, data)[0]
        return x, f"{data.name} ({len(x)} rows)"
    if student.job_dir is not None:
        x = job_test_inputs(student, student.job_dir)
        return x, f"the job's test split ({len(x)} rows)"
    rng = np.random.default_rng(0)
    x = rng.standard_normal((256, *student.input_shape)).astype(np.float32)
    return x, "256 standard-normal rows (give --data for real ones)"


def job_test_inputs(student: Student, job_dir: Path) -> np.ndarray:
    """The job's test rows of its data file, through the student's stored preprocessing."""
    record = job_record(job_dir)
    if record is None:
        raise ArtifactError(f"job {str(job_dir)!r} has no result.json or sweep.json")
    d = JobSpec.model_validate(record["spec"]).data
    if student.arrays is not None:
        return raw_test_rows(d.dataset, val_fraction=d.val_fraction, test_fraction=d.test_fraction,
                             seed=d.seed, label_column=d.label_column)[0]
    if student.prep is None and student.image is None:  # a student from before the record

        data = load_dataset(d.dataset, val_fraction=d.val_fraction, test_fraction=d.test_fraction,
                            seed=d.seed, label_column=d.label_column, train_limit=d.train_limit)
        return data.test.x
    source = Path(d.dataset)
    if not source.exists():
        raise ArtifactError(f"the job's data {d.dataset!r} does not exist any more; give --data "
                            "FILE (a table or images) for the parity check")

    def test_rows(n: int) -> np.ndarray:
        test = dataset_indices(n, carve_test=True, val_fraction=d.val_fraction,
                               test_fraction=d.test_fraction, seed=d.seed, train_limit=None,
                               where=repr(d.dataset))[2]
        assert test is not None
        return test

    if student.prep is not None:
        frame = read_table(source, text_columns=student.prep.categorical_columns)
        frame.columns = [str(c) for c in frame.columns]
        label = student.prep.label_column
        if label in frame.columns:
            frame = frame[~frame[label].isna()].reset_index(drop=True)
        return student.prep.transform(frame.iloc[test_rows(len(frame))], repr(d.dataset))[0]
    image = student.image
    assert image is not None
    if source.is_dir():
        files = folder_examples(source)[1]
        return image.transform([files[i] for i in test_rows(len(files))])

    label = image.label_column or "label"
    labels = read_labels(open_parquet(source, [label]), label)
    kept = np.flatnonzero(~labels.isna().to_numpy())
    rows = np.zeros(len(labels), dtype=bool)
    rows[kept[test_rows(len(kept))]] = True
    return parquet_image_inputs(student, source, rows)[0]


def onnx_parity(student: Student, onnx_path: Path, data: Path | None) -> Parity:
    """Run ONNX Runtime and PyTorch on the same inputs; compare logits and arg-max."""
    import torch

    ort = need_onnx()
    x, source = parity_inputs(student, data)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    raw = np.ascontiguousarray(x, dtype=np.float32).reshape(len(x), *student.input_shape)
    theirs = session.run(["logits"], {"input": raw})[0]
    inputs = x if student.arrays is None else student.arrays.transform(x, source)
    with torch.no_grad():
        ours = student.model(torch.from_numpy(inputs)).numpy()
    diff = float(np.abs(theirs - ours).max()) if len(x) else 0.0
    agree = float(np.mean(theirs.argmax(1) == ours.argmax(1))) if len(x) else 1.0
    return Parity(source=source, rows=len(x), max_abs_diff=diff, argmax_agreement=agree)


def export_student(student: Student, *, fmt: Literal["onnx", "safetensors"], out: Path,
                   data: Path | None = None) -> tuple[list[Path], Parity | None]:
    """Export ``student``; the files written and, for ONNX, the parity check."""
    if fmt == "safetensors":
        return [export_safetensors(student, out)], None
    if student.config.get("name") == "hf" and student.text is None:
        raise ArtifactError(
            f"{student.title} is a span (question answering) student: --format onnx exports "
            "classifiers; its Hugging Face folder (students/<name>-hf, beside the checkpoint) "
            "loads with AutoModelForQuestionAnswering and exports with torch.onnx like any QA "
            "model, or use --format safetensors")
    if student.text is not None:
        return list(export_text_onnx(student, out)), text_parity(student, out, data)
    paths = export_onnx(student, out)
    return list(paths), onnx_parity(student, out, data)
