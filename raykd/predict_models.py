"""Which of a job's models ``raykd predict`` runs: a student, a teacher, or the ensemble.

Names (``raykd predict JOB_DIR DATA --model NAME``):

- ``student`` (the default): the student with the best validation accuracy;
  ``student:<label>``: the student whose row in ``result.json`` has that label (a sweep's
  retrained best student is ``student:final``);
- ``teacher:<i>``: the job's ``i``-th teacher (from 0, in the spec's order);
- ``ensemble``: every teacher, their logits averaged before the softmax,
  ``z = (1/M) * sum_m z_m`` (:func:`raykd.losses.combine_teachers`, the plain ensemble
  the job's soft targets start from; probabilities are ``softmax(z)``).

A teacher and the ensemble take the job's stored preprocessing (``preprocessing.json``)
and its class names, as its students do; nothing is refitted. A teacher's weights are
its ``result.json`` checkpoint: a file inside the job directory is looked up in the
directory given (which may be a copy), any other (the user's own checkpoint, the shared
teacher cache) where it was recorded.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from raykd.artifact import (
    ArtifactError,
    Student,
    job_record,
    job_students,
    load_student,
    read_prep,
    read_text_prep,
    stored_prep,
)
from raykd.core.jobdir import JobLayout
from raykd.losses import combine_teachers
from raykd.models import load_checkpoint


class EnsembleModel(nn.Module):
    """The plain ensemble of ``members``: ``(1/M) * sum_m z_m`` of their logits ``(B, C)``."""

    def __init__(self, members: list[nn.Module]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return combine_teachers(torch.stack([m(x) for m in self.members]))


def model_names(record: dict[str, Any]) -> list[str]:
    """Every name ``--model`` accepts for a job's ``record`` (result.json or sweep.json)."""
    teachers = record.get("teachers") or []
    return (["student", *(f"student:{s['label']}" for s in job_students(record))]
            + [f"teacher:{t['index']}" for t in teachers] + (["ensemble"] if teachers else []))


def load_model(path: Path, *, model: str | None = None) -> Student:
    """The model ``model`` names (see the module docstring) of the job directory ``path``;
    with ``model`` None or ``student``, also of a checkpoint file.

    Raises:
        ArtifactError: An unknown name (the accepted ones listed), a checkpoint file with
            a teacher or the ensemble, a job without preprocessing, or missing weights.
    """
    if model is None or model == "student":
        return load_student(path)
    if path.is_file():
        raise ArtifactError(f"--model {model} picks a model of a job directory; {str(path)!r} is a "
                            "checkpoint file (give the job directory, or leave --model out)")
    record = job_record(path)
    if record is None:
        return load_student(path)  # its error: neither a checkpoint nor a finished job
    names = model_names(record)
    if model not in names:
        raise ArtifactError(f"unknown model {model!r} for job {str(path)!r}; accepted: {names}")
    kind, _, name = model.partition(":")
    if kind == "student":
        return load_student(path, student=name)
    teachers = record["teachers"] if kind == "ensemble" else [record["teachers"][int(name)]]
    members = [load_teacher(path, record, row) for row in teachers]
    if kind == "teacher":
        return members[0]
    ensemble = EnsembleModel([m.model for m in members]).eval()
    return replace(members[0], model=ensemble, checkpoint=path, kind="ensemble",
                   label=f"of {len(members)} teachers, mean of their logits",
                   config={"name": "ensemble", "members": [m.config for m in members]})


def teacher_checkpoint(job_dir: Path, record: dict[str, Any], row: dict[str, Any]) -> Path:
    """Where teacher ``row``'s weights are now (see the module docstring)."""
    recorded = row.get("checkpoint")
    if not recorded:
        raise ArtifactError(f"job {str(job_dir)!r} records no checkpoint for teacher "
                            f"{row['index']}")
    original = Path(str(record.get("job_dir") or job_dir))
    inside = Path(recorded).is_relative_to(original)
    here = job_dir / Path(recorded).relative_to(original) if inside else Path(recorded)
    if not here.is_file():
        raise ArtifactError(f"teacher {row['index']}'s checkpoint {str(here)!r} does not exist "
                            f"(result.json names {recorded!r})")
    return here


def load_teacher(job_dir: Path, record: dict[str, Any], row: dict[str, Any]) -> Student:
    """Teacher ``row`` of the job, with the job's class names and stored preprocessing."""
    where = f"{str(JobLayout(job_dir).preprocessing)!r}"
    prep, image, arrays = read_prep(stored_prep(job_dir), where)
    text = read_text_prep(stored_prep(job_dir), where)
    shape: tuple[int, ...]
    if text is not None:
        shape, names = text.input_shape, text.class_names
    elif image is not None:
        shape, names = image.input_shape, image.class_names
    elif prep is not None:
        shape, names = (len(prep.feature_names),), prep.class_names
    elif arrays is not None:
        shape = arrays.input_shape
        names = arrays.class_names or tuple(str(i) for i in range(arrays.num_classes))
    else:
        raise ArtifactError(f"job {str(job_dir)!r} has no preprocessing.json: its teachers predict "
                            "only for jobs that recorded their preprocessing (jobs run since "
                            "raykd stores it for every source)")
    checkpoint = teacher_checkpoint(job_dir, record, row)
    model = load_checkpoint(checkpoint, config=dict(row["model"]), input_shape=shape,
                            num_classes=len(names)).eval()
    return Student(model=model, checkpoint=checkpoint, input_shape=tuple(shape),
                   class_names=tuple(names), config=dict(row["model"]), prep=prep,
                   job_dir=job_dir, label=str(row["index"]), image=image, kind="teacher",
                   arrays=arrays, text=text)
