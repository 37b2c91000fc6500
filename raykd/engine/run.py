"""``run_job(spec, job_id=...)``: every stage of one distillation job, observable and resumable.

1. open the job: claim ``<storage>/<job_id>`` (or reopen it to resume the same spec) and
   start its event stream (``events.jsonl``);
2. prepare: data (a table's columns reported and its preprocessing written,
   :mod:`raykd.engine.data_stage`), Ray, splits, teachers and their logits
   (:mod:`raykd.engine.prepare`);
3. students, one per method entry and born-again generation (:mod:`raykd.engine.students`);
   their checkpoints then get the class names and the preprocessing in their metadata;
4. ``result.json`` (:class:`raykd.core.results.JobResult`) and a ``job_finished`` event.

A failure writes a ``job_failed`` event, with the one-line message of a user error, the
traceback of a bug, or ``cancelled`` for an interrupt or SIGTERM, and re-raises: a job
never stays "running" in its events after its driver has stopped by itself.
"""

from __future__ import annotations

import json
import platform
import time
import traceback
from collections.abc import Callable
from contextlib import AbstractContextManager, ExitStack
from pathlib import Path
from typing import Any

from raykd.core.errors import user_message
from raykd.core.events import JobFailed, JobFinished
from raykd.core.jobdir import spec_hash
from raykd.core.results import JobResult
from raykd.core.spec import JobSpec
from raykd.data import Dataset
from raykd.engine.context import Job, open_job
from raykd.engine.data_record import dataset_row, describe_students
from raykd.engine.prepare import prepare
from raykd.engine.students import (
    check_student_resources,
    export_hf_students,
    plan_size,
    prestart_worker,
    run_students,
    stop_student_worker,
)


def failure_event(exc: BaseException) -> JobFailed:
    """How a run ended without a result: cancelled, the user's error, or a bug."""
    if isinstance(exc, KeyboardInterrupt | SystemExit):
        return JobFailed(kind="cancelled", message="stopped by a signal or Ctrl+C; run the same "
                                                    "job id again to resume")
    message = user_message(exc)
    if message is not None:
        return JobFailed(kind="user_error", message=message)
    return JobFailed(kind="bug", message=f"{type(exc).__name__}: {exc}"[:2000],
                     traceback="".join(traceback.format_exception(exc))[-20000:])


def versions() -> dict[str, str]:
    """raykd, Python, torch and Ray versions, for the result."""
    import ray
    import torch

    from raykd import __version__

    return {"raykd": __version__, "python": platform.python_version(), "torch": torch.__version__,
            "ray": ray.__version__}


def run_job(spec: JobSpec, *, job_id: str | None = None, job_dir: Path | None = None,
            log: Callable[[str], None] = print,
            console: Callable[[Job], AbstractContextManager[Any]] | None = None) -> dict[str, Any]:
    """Run (or resume) the job ``job_id`` of ``spec``; write and return ``result.json``'s content.

    The job's directory is ``job_dir``, or ``<storage>/<job_id>`` (a generated id when none
    is given). Running the same id with the same spec again resumes it: finished teachers,
    logits and students are taken from disk. Another spec under the same id is refused.
    ``console`` makes a context manager that shows the job's events while it runs (the CLI
    prints them, epochs included, from ``events.jsonl``).
    """
    students, epochs = plan_size(spec)
    job = open_job(spec, job_id=job_id, job_dir=job_dir, log=log, students=students,
                   total_epochs=epochs)
    start = time.perf_counter()
    try:
        with ExitStack() as shown:
            try:  # a console that cannot start (ray.log refused) fails the job, with its event
                if console is not None:
                    shown.enter_context(console(job))
                result = _finished(job) or _run(job, start)
            except BaseException as exc:
                job.emit(failure_event(exc))
                raise
            job.emit(JobFinished(result=str(job.layout.result),
                                 seconds=time.perf_counter() - start))
    finally:
        job.close()  # the driver lock: another driver may run this job id from now on
    return result


def _finished(job: Job) -> dict[str, Any] | None:
    """The stored result of a job an earlier attempt finished (then nothing runs again)."""
    path = job.layout.result
    if not any(e.type == "job_finished" for e in job.earlier) or not path.is_file():
        return None
    job.say(f"job {job.job_id} already finished: {path}")
    return dict(json.loads(path.read_text()))


def _before_teachers(job: Job, data: Dataset) -> None:
    """Once Ray is up and the data's size known: fail fast when the students cannot run
    (workers, CPUs, GPUs, sharding), then start the job's student actor."""
    check_student_resources(job, n_train=len(data.train))
    prestart_worker(job)


def _run(job: Job, start: float) -> dict[str, Any]:
    spec = job.spec
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
        "timings": {**job.timer.stages, "total": time.perf_counter() - start},
    })
    result = JobResult.model_validate(job.result)  # the schema, checked
    result.write(job.layout.result)
    return json.loads(job.layout.result.read_text())  # exactly what a rerun returns
