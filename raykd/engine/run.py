"""``run_job(spec, job_id=...)``: every stage of one distillation job, observable and resumable.

1. open the job: claim ``<storage>/<job_id>`` (or reopen it to resume the same spec) and
   start its event stream (``events.jsonl``);
2. prepare: data (a table's columns reported and its preprocessing written,
   :mod:`raykd.engine.data_stage`), Ray, splits, teachers and their logits
   (:mod:`raykd.engine.prepare`);
3. students, one per method entry and born-again generation (:mod:`raykd.engine.students`);
   their checkpoints then get the class names and the preprocessing in their metadata;
4. ``result.json`` (:class:`raykd.core.results.JobResult`) and a ``job_finished`` event.

The start, the end and the result's atomic write are the lifecycle every job shares
(:mod:`raykd.engine.lifecycle`): a failure writes a ``job_failed`` event, with the one-line
message of a user error, the traceback of a bug, or ``cancelled`` for an interrupt or
SIGTERM, and re-raises: a job never stays "running" in its events after its driver has
stopped by itself.
"""

from __future__ import annotations

import json
import platform
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from raykd.core.jobdir import spec_hash
from raykd.core.results import JobResult
from raykd.core.spec import JobSpec
from raykd.core.version import __version__
from raykd.data import Dataset
from raykd.engine.cluster import may_train_on_driver
from raykd.engine.context import Job, open_job
from raykd.engine.data_record import dataset_row, describe_students
from raykd.engine.lifecycle import Lifecycle, LifecycleCallback
from raykd.engine.prepare import prepare
from raykd.engine.student_workers import (
    check_student_resources,
    prestart_worker,
    stop_student_worker,
)
from raykd.engine.students import export_hf_students, plan_size, run_students
from raykd.train.driver import start_warm_up


def versions() -> dict[str, str]:
    """raykd, Python, torch and Ray versions, for the result."""
    import ray
    import torch

    return {"raykd": __version__, "python": platform.python_version(), "torch": torch.__version__,
            "ray": ray.__version__}


def run_job(spec: JobSpec, *, job_id: str | None = None, job_dir: Path | None = None,
            log: Callable[[str], None] = print,
            console: Callable[[Job], AbstractContextManager[Any]] | None = None,
            callbacks: Iterable[LifecycleCallback] = ()) -> dict[str, Any]:
    """Run (or resume) the job ``job_id`` of ``spec``; write and return ``result.json``'s content.

    The job's directory is ``job_dir``, or ``<storage>/<job_id>`` (a generated id when none
    is given). Running the same id with the same spec again resumes it: finished teachers,
    logits and students are taken from disk. Another spec under the same id is refused.
    ``console`` makes a context manager entered while the job runs; what it gives, when a
    :class:`raykd.engine.LifecycleCallback` (the CLI's, which prints each event), is called as
    ``callbacks`` are: with each event of the job as it is written, and its end.
    """
    students, epochs = plan_size(spec)
    job = open_job(spec, job_id=job_id, job_dir=job_dir, log=log, students=students,
                   total_epochs=epochs)
    # a console that cannot start (ray.log refused) fails the job, with its event
    return Lifecycle(job, show=console, callbacks=callbacks).run(
        lambda life: _finished(life) or _run(life))


def _finished(life: Lifecycle) -> dict[str, Any] | None:
    """The stored result of a job an earlier attempt finished (then nothing runs again)."""
    job = life.job
    path = job.layout.result
    if not any(e.type == "job_finished" for e in job.earlier) or not path.is_file():
        return None
    job.say(f"job {job.job_id} already finished: {path}")
    return life.reuse_result(path)


def _before_teachers(job: Job, data: Dataset) -> None:
    """Once Ray is up and the data's size known: fail fast when the students cannot run
    (workers, CPUs, GPUs, sharding), then decide where they train and start the job's
    student actor when they train on one (:func:`~raykd.engine.student_workers.prestart_worker`)."""
    check_student_resources(job, n_train=len(data.train))
    prestart_worker(job)


def _run(life: Lifecycle) -> dict[str, Any]:
    """Prepare, students, then ``result.json``: its content as written."""
    job, spec = life.job, life.job.spec
    if may_train_on_driver(spec):  # torch's lazy imports while the data loads and Ray starts
        start_warm_up()
    try:
        prepared = prepare(job, on_ray=lambda data: _before_teachers(job, data))
        data = prepared.data
        try:
            run_students(job, data, prepared.teachers, prepared.cache, prepared.refs)
        finally:
            if prepared.teachers.pool is not None:
                prepared.teachers.pool.shutdown()
    finally:
        stop_student_worker(job)
    describe_students(job, data)
    export_hf_students(job, data)
    job.result.update({
        "job": spec.name,
        "job_id": job.job_id,
        "job_dir": str(job.job_dir),
        "spec_hash": spec_hash(spec),
        "attempts": job.attempt,
        "versions": versions(),
        "dataset": dataset_row(data, job.job_dir),
        "spec": json.loads(spec.model_dump_json()),
        "timings": life.timings(),
    })
    # the schema, checked; then exactly what a rerun returns
    return life.write_result(JobResult.model_validate(job.result))
