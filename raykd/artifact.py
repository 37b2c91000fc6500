"""A trained student as a file: found, loaded, and what ``raykd predict`` and ``raykd export``
(and their text, span and teacher paths) share.

:func:`find_student` resolves what the user names: a student checkpoint
(``.safetensors``), or a job directory (a run's ``result.json``, or a sweep's
``sweep.json`` whose final student is named ``final``), whose student with the best
validation score is taken (or the one whose label is given). :func:`load_student` reads the
checkpoint with its class names and its preprocessing (from the checkpoint's metadata, or
the job's ``preprocessing.json``): a table's, an image dataset's, a text source's, or the
scaling of an ``.npz`` or built-in dataset (:mod:`raykd.data.arrays`).
:func:`probabilities` is ``softmax(model(x))`` in batches; a :class:`Prediction` holds the
predicted class names and probabilities of a file's rows, with the accuracy over its
labelled rows (:func:`with_accuracy`). For ``raykd export`` and the text student's ONNX
path (:mod:`raykd.predict_text`): :class:`Parity`, how ONNX Runtime's logits agree with
PyTorch's, and :func:`need_onnx`. Every bad input is an :class:`ArtifactError` (a
:class:`~raykd.core.errors.UserError`) naming what is wrong.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from raykd.core.errors import UserError
from raykd.core.jobdir import JobLayout
from raykd.data import DataError, ImagePrep, TablePrep
from raykd.data.arrays import FORMAT as ARRAY_FORMAT
from raykd.data.arrays import ArrayPrep
from raykd.data.image_prep import FORMAT as IMAGE_FORMAT
from raykd.data.span_prep import SPAN_FORMAT
from raykd.data.text_prep import FORMAT as TEXT_FORMAT
from raykd.data.text_prep import TextPrep
from raykd.models import checkpoint_info, load_checkpoint
from raykd.train.steps import inference_batch


class ArtifactError(UserError, ValueError):
    """A checkpoint or job directory that cannot be used for predict or export."""


@dataclass
class Student:
    """A loaded student: the model (eval mode), where it came from, and what it expects."""

    model: nn.Module
    checkpoint: Path
    input_shape: tuple[int, ...]
    class_names: tuple[str, ...]
    config: dict[str, Any]
    prep: TablePrep | None = None
    job_dir: Path | None = None
    label: str = ""
    image: ImagePrep | None = None
    kind: str = "student"
    arrays: ArrayPrep | None = None
    text: TextPrep | None = None

    @property
    def title(self) -> str:
        """How the command line names it: ``student kd (path)``, ``teacher 0 (path)``, ..."""
        return f"{self.kind} {self.label} ({self.checkpoint})"

    @property
    def fitted(self) -> TablePrep | ImagePrep | ArrayPrep | TextPrep | None:
        """Its preprocessing: a table's, an image dataset's, an array source's or a text
        source's, if recorded."""
        return self.prep or self.image or self.arrays or self.text

    @property
    def prep_record(self) -> dict[str, Any] | None:
        """The JSON record of its preprocessing, if any."""
        fitted = self.fitted
        return None if fitted is None else fitted.to_dict()


@dataclass
class Prediction:
    """Predicted classes and probabilities of a table's rows, and what the inputs needed."""

    names: list[str]
    probabilities: np.ndarray
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    accuracy: float | None = None
    labelled: int = 0
    files: list[str] | None = None


def job_record(job_dir: Path) -> dict[str, Any] | None:
    """A finished job's ``result.json`` (a run) or ``sweep.json`` (a sweep), or None."""
    for name in JobLayout.RESULTS:
        if (job_dir / name).is_file():
            try:
                record = json.loads((job_dir / name).read_text())
            except (OSError, ValueError) as err:
                raise ArtifactError(f"{str(job_dir / name)!r} is not readable JSON "
                                    f"({err})") from None
            return dict(record) | {"_file": name}
    return None


def job_students(record: dict[str, Any]) -> list[dict[str, Any]]:
    """``{label, val_score, checkpoint}`` of each student of a run, or a sweep's final one.

    ``val_score`` picks the student when none is named: validation accuracy, or for span
    data SQuAD val F1 (window accuracy says little about how questions are answered)."""
    if record["_file"] == JobLayout.SWEEP:
        final = record.get("final")
        return [] if not final else [{"label": "final", "val_score": None,
                                      "checkpoint": final["checkpoint"]}]
    return [{"label": str(s["label"]), "val_score": _val_score(s),
             "checkpoint": s["generations"][-1]["checkpoint"]}
            for s in record.get("students") or []]


def _val_score(student: dict[str, Any]) -> float | None:
    span = student.get("span")
    return span.get("val_f1") if isinstance(span, dict) else student.get("val_accuracy")


def find_student(path: Path, *, student: str | None = None) -> tuple[Path, Path | None, str]:
    """``(checkpoint, job_dir or None, label)`` of a checkpoint path or a job directory."""
    if path.is_file():
        if student is not None:
            raise ArtifactError(f"--student picks a student of a job directory; {str(path)!r} is a "
                                "checkpoint file")
        return path, None, path.stem
    record = job_record(path)
    if record is None:
        raise ArtifactError(f"{str(path)!r} is neither a student checkpoint (.safetensors) nor a "
                            "finished job directory (no result.json or sweep.json)")
    students = job_students(record)
    if not students:
        raise ArtifactError(f"job {str(path)!r} has no students in its {record['_file']}")
    if student is not None:
        chosen = [s for s in students if s["label"] == student]
        if not chosen:
            raise ArtifactError(f"job {str(path)!r} has no student {student!r}; its students: "
                                f"{[s['label'] for s in students]}")
    else:
        chosen = sorted(students, key=lambda s: -(s.get("val_score") or 0.0))
    best = chosen[0]
    return job_checkpoint(path, best["checkpoint"]), path, str(best["label"])


def job_checkpoint(job_dir: Path, recorded: str) -> Path:
    """A student checkpoint of ``job_dir``, found in the directory given, not where it was.

    ``result.json`` records absolute paths; a job directory copied or moved elsewhere
    (off a cluster's shared disk, renamed) still holds its ``students/`` files, so those
    win: a path inside the original directory is never used in place of the copy's own.
    """
    students, name = JobLayout(job_dir).students, Path(recorded).name
    inside = Path(recorded).parent.name == students.name  # a sweep's final student: at the top
    own = students / name if inside else job_dir / name
    if own.is_file():
        return own
    raise ArtifactError(f"job {str(job_dir)!r} has no {own.relative_to(job_dir)} (result.json "
                        f"names {recorded!r}); the job directory is incomplete")


def read_prep(record: dict[str, Any] | None, where: str
              ) -> tuple[TablePrep | None, ImagePrep | None, ArrayPrep | None]:
    """A preprocessing record as ``(table's, images', arrays')``: at most one is set."""
    if record is None:
        return None, None, None
    if record.get("format") == IMAGE_FORMAT:
        return None, ImagePrep.from_dict(record, where), None
    if record.get("format") == ARRAY_FORMAT:
        return None, None, ArrayPrep.from_dict(record, where)
    if record.get("format") in (TEXT_FORMAT, SPAN_FORMAT):
        return None, None, None  # text: read_text_prep; span windows: raykd.predict_spans
    return TablePrep.from_dict(record, where), None, None


def read_text_prep(record: dict[str, Any] | None, where: str) -> TextPrep | None:
    """A text source's record (:class:`~raykd.data.text_prep.TextPrep`), or None for any other."""
    if record is None or record.get("format") != TEXT_FORMAT:
        return None
    return TextPrep.from_dict(record, where)


def stored_prep(job_dir: Path) -> dict[str, Any] | None:
    """A job directory's ``preprocessing.json`` record, or None when it has none."""
    path = job_dir / JobLayout.PREPROCESSING
    return json.loads(path.read_text()) if path.is_file() else None


def load_student(path: Path, *, student: str | None = None) -> Student:
    """The student of a checkpoint or job directory (see the module docstring)."""
    checkpoint, job_dir, label = find_student(path, student=student)
    info = checkpoint_info(checkpoint)
    record = info["preprocessing"]
    for folder in (checkpoint.parent, job_dir):
        if record is None and folder is not None:
            record = stored_prep(folder)
    prep, image, arrays = read_prep(record, f"checkpoint {str(checkpoint)!r}")
    text = read_text_prep(record, f"checkpoint {str(checkpoint)!r}")
    fitted = prep or image or arrays or text
    names = info["class_names"] or (list(fitted.class_names or ()) if fitted else None)
    names = names or [str(i) for i in range(info["num_classes"])]
    model = load_checkpoint(checkpoint).eval()
    return Student(model=model, checkpoint=checkpoint, input_shape=tuple(info["input_shape"]),
                   class_names=tuple(names), config=info["config"], prep=prep, job_dir=job_dir,
                   label=label, image=image, arrays=arrays, text=text)


def label_text(values: Any) -> np.ndarray:
    """Labels as text, the way class names are written (``3.0`` in a file is class ``3``)."""
    import pandas as pd

    if pd.api.types.is_float_dtype(values) and bool((values == values.round()).all()):
        values = values.astype("int64")
    return np.asarray(values.astype(str).to_numpy(), dtype=object)


def with_accuracy(out: Prediction, labels: Any) -> Prediction:
    """``out`` with its accuracy over the rows whose label (a Series, or None) is known."""
    if labels is None:
        return out
    known = ~labels.isna().to_numpy()
    if known.any():
        guessed = np.asarray(out.names, dtype=object)[known]
        out.accuracy = float(np.mean(guessed == label_text(labels[known])))
        out.labelled = int(known.sum())
    return out


def probabilities(model: nn.Module, x: np.ndarray, batch_size: int = 4096) -> np.ndarray:
    """Softmax of the model's logits over ``x``, float64 ``(N, C)`` (a text model in batches
    of bounded tokens: :func:`raykd.train.steps.inference_batch`)."""
    batch_size = inference_batch(model, batch_size)
    out = []
    with torch.no_grad():
        for start in range(0, len(x), batch_size):
            logits = model(torch.from_numpy(x[start:start + batch_size]))
            out.append(torch.softmax(logits.double(), dim=1).numpy())
    if not out:
        raise DataError("the file has no rows to predict; give a file with at least one data row")
    return np.concatenate(out)


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


def need_onnx() -> Any:
    """ONNX Runtime, once onnx and onnxscript import too (ArtifactError naming the extra)."""
    try:
        import onnx  # noqa: F401
        import onnxruntime
        import onnxscript  # noqa: F401
    except ImportError as err:
        raise ArtifactError(f"export --format onnx needs {err.name!r}: "
                            "pip install 'raykd[export]'") from None
    return onnxruntime
