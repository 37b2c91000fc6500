"""What a job records about its data: the fitted preprocessing (``preprocessing.json``), the
``dataset`` entry of ``result.json``, and the class names and preprocessing written into every
student checkpoint's metadata once the students are trained, so that a checkpoint alone is
enough for ``raykd predict`` and ``raykd export``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from raykd.core.atomic_files import atomic_path
from raykd.core.jobdir import JobLayout
from raykd.data import Dataset
from raykd.engine.context import Job
from raykd.models import describe_checkpoint

__all__ = ["dataset_row", "describe_students", "write_preprocessing"]


def write_preprocessing(data: Dataset, directory: Path) -> Path:
    """``<directory>/preprocessing.json``: the fitted preprocessing record (any source)."""
    record = data.prep_record
    assert record is not None
    path = directory / JobLayout.PREPROCESSING
    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(record, indent=2))
    return path


def describe_students(job: Job, data: Dataset) -> None:
    """Class names and preprocessing into every student checkpoint of the result (idempotent);
    for span data the preprocessing record also carries the student's ``null_threshold``
    (chosen on val), which :mod:`raykd.predict_spans` answers with."""
    if data.class_names is None and data.prep_record is None:
        return
    record = data.prep_record
    for student in job.result.get("students", []):
        for gen in student["generations"]:
            mine = record
            if record is not None and gen.get("span") is not None:  # span data: its threshold too
                mine = {**record, "null_threshold": gen["span"]["threshold"]}
            describe_checkpoint(gen["checkpoint"], class_names=data.class_names, preprocessing=mine)


def dataset_row(data: Dataset, job_dir: Path) -> dict[str, Any]:
    """The ``dataset`` entry of ``result.json`` (:class:`raykd.core.results.DatasetRow`)."""
    row: dict[str, Any] = {
        "name": data.name, "train": len(data.train), "val": len(data.val), "test": len(data.test),
        "num_classes": data.num_classes,
        "fingerprints": {s: getattr(data, s).fingerprint for s in ("train", "val", "test")},
        "class_names": None if data.class_names is None else list(data.class_names),
    }
    if data.table is not None:
        t = data.table
        row["table"] = {
            "label_column": t.label_column,
            "used": [{"column": c.name, "kind": c.kind, "inputs": c.outputs} for c in t.columns],
            "dropped": list(t.dropped), "rows": dict(t.rows), "fitted_on": t.fitted_on,
            "preprocessing": str(job_dir / JobLayout.PREPROCESSING),
        }
    if data.text is not None:
        row["text"] = data.text.to_dict()
    if data.spans is not None:
        row["spans"] = data.spans.to_dict()
    return row
