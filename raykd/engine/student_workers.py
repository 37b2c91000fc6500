"""Where a job's students train, settled once Ray is up and before any teacher work.

:func:`check_student_resources` fails fast, with the numbers, when the student workers
cannot fit the cluster or the data; :func:`choose_runner` picks the runner once
(:func:`raykd.engine.cluster.student_runner`: ``driver``, ``actor`` or ``train``) and
records it in the result; with runner ``actor`` the job's one student actor is started on
first use (:func:`student_worker`, early on a CPU cluster: :func:`prestart_worker`),
reused by every student and released by :func:`stop_student_worker`.
"""

from __future__ import annotations

from typing import Any

import ray

from raykd.core.errors import ResourceError
from raykd.engine.cluster import Runner, resolve_gpu, student_runner
from raykd.engine.context import Job
from raykd.train.actor import start_worker, stop_worker
from raykd.train.steps import check_sharding


def check_student_resources(job: Job, *, n_train: int) -> None:
    """Fail fast, with the numbers, when the student workers cannot fit the cluster or the data.

    With augmentation the teachers serve online while students train, and so does a
    born-again generation (one more actor at ``teacher_gpu_fraction``) beside them.
    """
    spec, sc = job.spec, job.spec.scaling
    check_sharding(n_train, batch_size=spec.train.batch_size, world_size=sc.num_workers)
    have = ray.cluster_resources()
    need_cpu = sc.num_workers * sc.cpus_per_worker
    if need_cpu > have.get("CPU", 0) + 1e-9:
        raise ResourceError(
            f"scaling.num_workers={sc.num_workers} x "
            f"scaling.cpus_per_worker={sc.cpus_per_worker:g} needs {need_cpu:g} CPUs, "
            f"the cluster has {have.get('CPU', 0):g}"
        )
    if not resolve_gpu(sc.use_gpu):
        return
    born_again = any(m.generations > 1 for m in spec.methods)
    online_gpus = 0.0
    if spec.data.augment:
        online_gpus = (len(spec.teachers) + born_again) * sc.teacher_gpu_fraction
    need_gpu = sc.num_workers + online_gpus
    if need_gpu > have.get("GPU", 0) + 1e-9:
        raise ResourceError(
            f"{sc.num_workers} GPU student workers + {online_gpus:g} GPUs of online teachers "
            f"(augmentation on{', plus a born-again generation' if born_again else ''}) need "
            f"{need_gpu:g} GPUs, the cluster has {have.get('GPU', 0):g}; lower scaling.num_workers "
            f"or scaling.teacher_gpu_fraction"
        )


def choose_runner(job: Job) -> Runner:
    """Decide where the job's students train (:func:`raykd.engine.cluster.student_runner`),
    once, with Ray up and before any teacher work; record it (``student_runner`` in the
    result) and say so when it is the driver."""
    if job.student_runner is not None:
        return job.student_runner
    runner = job.student_runner = student_runner(job.spec)
    job.result["student_runner"] = runner
    if runner == "driver":
        why = ("a local Ray it started, one worker, CPUs" if job.spec.scaling.student_runner
               == "auto" else "scaling.student_runner: driver")
        job.say(f"students: trained in this driver's process ({why}): no student actor to start")
    return runner


def prestart_worker(job: Job) -> None:
    """Start the job's student actor early (runner ``actor``, CPU clusters only).

    Its process then starts while the teachers train. With GPUs it waits for the student
    stage: held from the start, its GPU could keep the teachers' placement group from
    being reserved.
    """
    if choose_runner(job) == "actor" and not resolve_gpu(job.spec.scaling.use_gpu):
        student_worker(job)


def student_worker(job: Job) -> Any:
    """The job's student actor, started on first use (one per job, reused by every student)."""
    if job.worker is None:
        sc = job.spec.scaling
        job.worker = start_worker(cpus=sc.cpus_per_worker, use_gpu=resolve_gpu(sc.use_gpu),
                                  passive=job.spec.data.augment)
    return job.worker


def stop_student_worker(job: Job) -> None:
    """Release the job's student actor, if one was started."""
    worker, job.worker = job.worker, None
    stop_worker(worker)
