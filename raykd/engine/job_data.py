"""A job's data stage with tables and image folders: columns chosen by the spec, reported,
and the fitted preprocessing kept with the student.

- :func:`load_job_data` loads the spec's data (``data.features`` and ``data.image_size``
  included; every file checked once opened against ``RAYKD_DATA_ROOTS``, and never from
  ``<storage>/.service``: :mod:`raykd.data.paths`), checks the models against it (a user module is built once and checked on
  one batch, before Ray starts), logs which columns were used and which dropped and why
  (for images: the files ignored), and writes the fitted preprocessing to
  ``<job_dir>/preprocessing.json``;
- :func:`describe_students` writes the class names and the preprocessing into every
  student checkpoint's metadata once the students are trained, so that a checkpoint alone
  is enough for ``raykd predict`` and ``raykd export``;
- :func:`dataset_row` is the ``dataset`` entry of ``result.json``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from raykd.core.jobdir import JobLayout, atomic_path
from raykd.core.spec import FeaturesSpec, JobSpec
from raykd.data import ColumnChoice, Dataset, load_dataset
from raykd.data.paths import SERVICE_DIR, forbid
from raykd.engine.context import Job
from raykd.engine.prepare import check_models


def column_choice(features: FeaturesSpec) -> ColumnChoice:
    """The data layer's form of ``data.features``."""
    return ColumnChoice(include=features.include, exclude=tuple(features.exclude),
                        max_levels=features.max_levels, min_level_count=features.min_level_count)


def column_report(data: Dataset) -> list[str]:
    """Human lines: the columns used (with their kinds), those dropped and why, rows dropped."""
    table = data.table
    if table is None:
        return []
    used = []
    for c in table.columns:
        what = (f"categorical, {len(c.levels)} levels" if c.kind == "categorical" else
                "numeric" + (", + missing indicator" if c.missing_indicator else ""))
        used.append(f"{c.name} ({what})")
    lines = [f"columns used ({len(table.columns)} -> {len(table.feature_names)} inputs): "
             + ", ".join(used)]
    lines += [f"column dropped: {d['column']!r}: {d['reason']}" for d in table.dropped]
    lost = table.rows.get("dropped_missing_label", 0)
    if lost:
        lines.append(f"rows dropped: {lost} of {table.rows.get('read')} have no label in column "
                     f"{table.label_column!r}")
    return lines


def text_report(data: Dataset) -> str:
    """One human line on a text dataset: its columns, byte width and truncated texts."""
    text = data.text
    assert text is not None
    return (f"text: columns {list(text.columns)} (label {text.label_column!r}) as UTF-8 bytes, "
            f"width {text.width} (cap {text.max_bytes}); {text.truncated} text(s) truncated")


def span_tokenizer(spec: JobSpec) -> str | None:
    """The tokenizer that cuts span data into windows: the student's (``tokenizer``, else
    ``path``) when it is an ``hf`` model; every teacher must use the same files
    (:func:`raykd.engine.prepare.check_span_models`)."""
    model = spec.student.model
    if model.name != "hf":
        return None
    return getattr(model, "tokenizer", None) or getattr(model, "path", None)


def span_report(data: Dataset) -> str:
    """One human line on span data: questions and windows per split, window sizes."""
    spans = data.spans
    assert spans is not None
    record = spans.to_dict()
    per = ", ".join(f"{s} {record['questions'][s]} questions / {record['windows'][s]} windows"
                    for s in ("train", "val", "test"))
    return (f"spans: {per}; windows of {spans.max_length} tokens, doc_stride {spans.doc_stride}, "
            f"questions cut to {spans.max_query_length} tokens, tokenizer {spans.tokenizer}")


def load_job_data(job: Job) -> Dataset:
    """Load and split the spec's data (with ``data.features``); check the models; report."""
    d = job.spec.data
    forbid(Path(job.spec.storage) / SERVICE_DIR)  # the service's secrets, wherever they are
    with job.stage("data"):
        data = load_dataset(d.dataset, val_fraction=d.val_fraction, test_fraction=d.test_fraction,
                            seed=d.seed, label_column=d.label_column, train_limit=d.train_limit,
                            features=column_choice(d.features), image_size=d.image_size,
                            image_column=d.image_column, text_column=d.text_column,
                            text_pair_column=d.text_pair_column, tokenizer=span_tokenizer(job.spec),
                            max_length=d.max_length, doc_stride=d.doc_stride,
                            max_query_length=d.max_query_length)
        check_models(job.spec, data)
        check_user_models(job.spec, data)
    names = f" {list(data.class_names)}" if data.class_names else ""
    job.say(f"data: {data.name} train {len(data.train)} / val {len(data.val)} / test "
            f"{len(data.test)}, {data.num_classes} classes{names}, input {data.input_shape}")
    for line in column_report(data):
        job.say(line)
    if data.text is not None:
        job.say(text_report(data))
    if data.spans is not None:
        job.say(span_report(data))
    if data.image is not None and data.image.ignored:
        job.say(f"files ignored (not .png/.jpg/.jpeg in a class folder): {list(data.image.ignored)}")
    fitted = data.fitted  # every source: a table's, images', or the arrays' scaling
    if fitted is not None:
        path = write_preprocessing(data, job.job_dir)
        job.say(f"preprocessing (fitted on {fitted.fitted_on}): {path}")
    return data


def check_user_models(spec: JobSpec, data: Dataset) -> None:
    """Build every ``name: module`` model without a checkpoint once: importable, callable as
    the contract says, logits ``(batch, C)`` (:mod:`raykd.models.user`); UserModelError else."""
    from raykd.models import build_model

    for t in [*spec.teachers, spec.student]:
        if t.model.name == "module" and t.checkpoint is None:
            build_model(t.model.model_dump(), data.input_shape, data.num_classes)


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
    from raykd.models import describe_checkpoint

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
