"""A job's data stage: load and split the spec's data, check the models against it, report
what was used, and keep the fitted preprocessing and the splits' fingerprints in the job directory.

- :func:`load_data` is the stage: :func:`load_job_data`, then :func:`check_same_data` (a job
  resumes only on the data it started with);
- :func:`load_job_data` loads the spec's data (``data.features`` and ``data.image_size``
  included; every file checked once opened against ``RAYKD_DATA_ROOTS``, and never from
  ``<storage>/.service``: :mod:`raykd.data.paths`), checks the models against it (a user
  module is built once and checked on one batch, before Ray starts), logs which columns were
  used and which dropped and why (for images: the files ignored), and writes the fitted
  preprocessing to ``<job_dir>/preprocessing.json``.

What the job later records about its data (the result's ``dataset`` entry, the class names
and preprocessing in each student checkpoint) is :mod:`raykd.engine.data_record`.
"""

from __future__ import annotations

import json
from pathlib import Path

from raykd.core.atomic_files import atomic_path, ensure_dir
from raykd.core.errors import JobDirError
from raykd.core.spec import FeaturesSpec, JobSpec
from raykd.data import ColumnChoice, Dataset, load_dataset
from raykd.data.paths import SERVICE_DIR, forbid
from raykd.engine.context import Job
from raykd.engine.data_record import write_preprocessing
from raykd.engine.model_checks import check_models
from raykd.models import build_model

__all__ = ["check_same_data", "check_user_models", "column_choice", "column_report", "load_data",
           "load_job_data", "span_report", "span_tokenizer", "text_report"]


def load_data(job: Job) -> Dataset:
    """Load and split the spec's data; check the models; report the columns of a table.

    See :func:`load_job_data` (``data.features``, the column report, ``preprocessing.json``).
    """
    ensure_dir(job.job_dir, "the job directory")  # its preprocessing.json is written there
    data = load_job_data(job)
    check_same_data(job, data)
    return data


def check_same_data(job: Job, data: Dataset) -> None:
    """A job resumes only on the data it started with (its splits' fingerprints, kept in
    ``<job_dir>/data.json`` by the first attempt that loaded them).

    A data file changed between attempts would otherwise mix teachers and students of the
    old data with preprocessing fitted on the new.

    Raises:
        JobDirError: when this attempt's fingerprints differ from the recorded ones.
    """
    now = {s: getattr(data, s).fingerprint for s in ("train", "val", "test")}
    path = job.layout.data
    if path.is_file():
        before = json.loads(path.read_text())
        if before != now:
            changed = [s for s in now if before.get(s) != now[s]]
            raise JobDirError(
                f"job {job.job_id!r} in {job.job_dir}: its data {job.spec.data.dataset!r} changed "
                f"since it started (the {', '.join(changed)} split(s) differ); a job id resumes "
                f"only on the same data: restore the data, or give a new --job-id (or --job-dir)")
        return
    job.job_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(now, indent=2))


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
        job.say("files ignored (not .png/.jpg/.jpeg in a class folder): "
                f"{list(data.image.ignored)}")
    fitted = data.fitted  # every source: a table's, images', or the arrays' scaling
    if fitted is not None:
        path = write_preprocessing(data, job.job_dir)
        job.say(f"preprocessing (fitted on {fitted.fitted_on}): {path}")
    return data


def check_user_models(spec: JobSpec, data: Dataset) -> None:
    """Build every ``name: module`` model without a checkpoint once: importable, callable as
    the contract says, logits ``(batch, C)`` (:mod:`raykd.models.user`); UserModelError else."""
    for t in [*spec.teachers, spec.student]:
        if t.model.name == "module" and t.checkpoint is None:
            build_model(t.model.model_dump(), data.input_shape, data.num_classes)


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
    (:func:`raykd.engine.model_checks.check_span_models`)."""
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
