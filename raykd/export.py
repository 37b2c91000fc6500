"""``raykd export``: a student as ONNX or as a self-describing safetensors file.

- **onnx**: the model with one input ``input`` of shape ``(batch, *input_shape)``
  (float32, already preprocessed) and one output ``logits`` ``(batch, C)``, exported by
  ``torch.onnx.export`` (the dynamo exporter; needs the ``export`` extra: onnx,
  onnxruntime, onnxscript). The preprocessing record and the class names are written
  beside it as ``<name>.preprocessing.json``. :func:`onnx_parity` then runs ONNX Runtime
  and PyTorch on the same inputs (the job's test split, a given table, or, for a bare
  checkpoint without either, 256 standard-normal rows) and reports the largest absolute
  difference of the logits and the share of rows whose arg-max agrees.
- **safetensors**: the weights with metadata ``raykd_model`` (architecture),
  ``input_shape``, ``num_classes``, ``class_names`` and ``preprocessing``: everything
  ``raykd predict`` needs, in one file.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from raykd.predict import ArtifactError, Student, image_inputs, table_inputs

PARITY_TOLERANCE = 1e-4
"""Largest accepted absolute difference between ONNX Runtime's and PyTorch's logits."""


@dataclass(frozen=True)
class Parity:
    """How ONNX Runtime and PyTorch agree on ``rows`` inputs from ``source``."""

    source: str
    rows: int
    max_abs_diff: float
    argmax_agreement: float

    @property
    def ok(self) -> bool:
        return self.max_abs_diff <= PARITY_TOLERANCE and self.argmax_agreement == 1.0


def _need_onnx() -> Any:
    try:
        import onnx  # noqa: F401
        import onnxruntime
        import onnxscript  # noqa: F401
    except ImportError as err:
        raise ArtifactError(f"export --format onnx needs {err.name!r}: pip install 'raykd[export]'") from None
    return onnxruntime


def export_onnx(student: Student, out: Path) -> tuple[Path, Path]:
    """Write ``out`` (ONNX) and ``<out stem>.preprocessing.json``; return both paths."""
    import torch

    _need_onnx()
    out.parent.mkdir(parents=True, exist_ok=True)
    example = torch.zeros((2, *student.input_shape), dtype=torch.float32)
    batch = torch.export.Dim("batch", min=1)
    with warnings.catch_warnings():  # the exporter's own deprecation notices, not the user's
        warnings.simplefilter("ignore")
        torch.onnx.export(student.model, (example,), str(out), input_names=["input"],
                          output_names=["logits"], dynamic_shapes=({0: batch},), dynamo=True,
                          verbose=False, optimize=True, external_data=False)
    side = out.with_name(f"{out.stem}.preprocessing.json")
    record = {"class_names": list(student.class_names), "input_shape": list(student.input_shape),
              "input": "input", "output": "logits",
              "preprocessing": student.prep_record}
    side.write_text(json.dumps(record, indent=2))
    return out, side


def export_safetensors(student: Student, out: Path) -> Path:
    """The student's weights with its architecture, classes and preprocessing in the metadata."""
    from raykd.models import save_checkpoint

    return save_checkpoint(
        student.model, out, config=student.config, input_shape=student.input_shape,
        num_classes=len(student.class_names), class_names=student.class_names,
        preprocessing=student.prep_record,
        extra={"exported_from": str(student.checkpoint)},
    )


def parity_inputs(student: Student, data: Path | None) -> tuple[np.ndarray, str]:
    """The inputs of the parity check and how to name them (see the module docstring)."""
    if data is not None:
        x = image_inputs(student, data)[0] if data.is_dir() else table_inputs(student, data)[0]
        return x, f"{data.name} ({len(x)} rows)"
    if student.job_dir is not None:
        from raykd.data import load_dataset
        from raykd.engine.job_data import column_choice
        from raykd.spec import JobSpec

        result = json.loads((student.job_dir / "result.json").read_text())
        d = JobSpec.model_validate(result["spec"]).data
        split = load_dataset(d.dataset, val_fraction=d.val_fraction, test_fraction=d.test_fraction,
                             seed=d.seed, label_column=d.label_column, train_limit=d.train_limit,
                             features=column_choice(d.features), image_size=d.image_size).test
        return split.x, f"the job's test split ({len(split)} rows)"
    rng = np.random.default_rng(0)
    x = rng.standard_normal((256, *student.input_shape)).astype(np.float32)
    return x, "256 standard-normal rows (give --data for real ones)"


def onnx_parity(student: Student, onnx_path: Path, data: Path | None) -> Parity:
    """Run ONNX Runtime and PyTorch on the same inputs; compare logits and arg-max."""
    import torch

    ort = _need_onnx()
    x, source = parity_inputs(student, data)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    theirs = session.run(["logits"], {"input": x})[0]
    with torch.no_grad():
        ours = student.model(torch.from_numpy(x)).numpy()
    diff = float(np.abs(theirs - ours).max()) if len(x) else 0.0
    agree = float(np.mean(theirs.argmax(1) == ours.argmax(1))) if len(x) else 1.0
    return Parity(source=source, rows=len(x), max_abs_diff=diff, argmax_agreement=agree)


def export_student(student: Student, *, fmt: Literal["onnx", "safetensors"], out: Path,
                   data: Path | None = None) -> tuple[list[Path], Parity | None]:
    """Export ``student``; the files written and, for ONNX, the parity check."""
    if fmt == "safetensors":
        return [export_safetensors(student, out)], None
    paths = export_onnx(student, out)
    return list(paths), onnx_parity(student, out, data)
