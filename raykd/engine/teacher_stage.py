"""The job's teacher stage: start the teacher actors, train those without a checkpoint,
get every split's logits, record the teachers' and the ensemble's scores, and keep what
serves online logits (augmentation) for the students."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from raykd.core.atomic_files import publish_file
from raykd.core.events import TeacherReady
from raykd.data import Dataset
from raykd.engine.cluster import online_in_process, resolve_gpu
from raykd.engine.context import Job
from raykd.engine.scores import model_scores, span_event_fields, span_said
from raykd.engine.teacher_checkpoints import (
    earlier_fit,
    own_checkpoint,
    teacher_cache_path,
    teacher_configs,
)
from raykd.engine.teacher_logits import Logits, cached_logits, report_rejected, split_logits
from raykd.losses.topk import dense
from raykd.teachers import TeacherPool
from raykd.teachers.ensemble import OnlineEnsemble
from raykd.train.online import InProcessTeachers

__all__ = ["TeacherSet", "online_ensemble", "run_teachers", "start_pool"]


@dataclass
class TeacherSet:
    """Per-teacher logits (M, N, C) of each split, and the live pool when serving online.

    The logits are in the form the spec asks for (dense, or top-k with ``cache.topk``) in
    every split; accuracies read them through :func:`raykd.losses.topk.dense`.
    """

    logits: dict[str, Logits]
    checkpoints: list[str]
    pool: Any | None = None
    _train_ref: Any = None

    def train_ref(self) -> Any:
        """The train logits in the object store, put once and shared by every student."""
        import ray

        if self._train_ref is None:
            self._train_ref = ray.put(self.logits["train"])
        return self._train_ref


def start_pool(configs: list[Any], data: Dataset, job: Job) -> Any:
    """The teacher actors for ``configs`` (a placement group of GPUs when there are GPUs)."""
    return TeacherPool(configs, input_shape=data.input_shape, num_classes=data.num_classes,
                       use_gpu=resolve_gpu(job.spec.scaling.use_gpu),
                       gpu_fraction=job.spec.scaling.teacher_gpu_fraction)


def run_teachers(job: Job, data: Dataset, cache: Any, refs: dict[str, Any]) -> TeacherSet:
    """Start, train (when needed) and query the teachers; record their accuracies.

    Every logit already cached (:func:`cached_logits`): no teacher actor starts, except
    what serves online logits with augmentation. Otherwise the actors are released on
    every path out (on CPUs one ensemble actor replaces them when they serve online).
    """
    # decided before any work: an in-process request a GPU cluster cannot honour fails here
    job.in_process_teachers = job.spec.data.augment and online_in_process(job.spec)
    configs = teacher_configs(job, data, cache)
    hit = cached_logits(job, data, cache, configs)
    report_rejected(job, cache)
    if hit is not None:
        record_teachers(job, data, hit, configs, {})
        job.say("teachers: every split's logits came from the cache")
        return TeacherSet(logits=hit, checkpoints=[str(c.checkpoint) for c in configs],
                          pool=serving(job, online_server(job, data, configs)))
    with job.stage("teacher_start"):
        pool = start_pool(configs, data, job)
    try:
        fitted = train_missing(job, data, cache, refs, pool, configs)
        with job.stage("teacher_logits"):
            logits = split_logits(pool, data, job, cache, refs, "teacher")
        report_rejected(job, cache)
        record_teachers(job, data, logits, configs, fitted)
        job.result["teacher_placement"] = pool.infos()
    except BaseException:
        pool.shutdown()
        raise
    if not job.spec.data.augment:
        pool.shutdown()  # frozen logits are cached: free the teachers' devices for the students
        pool = None
    elif not resolve_gpu(job.spec.scaling.use_gpu):
        pool.shutdown()  # on CPUs one actor serves every teacher: one call per step
        pool = online_ensemble(job, data, configs)
    return TeacherSet(logits=logits, checkpoints=[str(c.checkpoint) for c in configs],
                      pool=serving(job, pool))


def serving(job: Job, pool: Any) -> Any:
    """Record (``online_teachers`` in the result) and say how online logits are served."""
    if pool is None:
        job.result["online_teachers"] = None
    elif isinstance(pool, InProcessTeachers):
        job.result["online_teachers"] = "in_process"
        job.say("online teachers: in the student's process, a thread beside its steps")
    else:
        job.result["online_teachers"] = "actors"
    return pool


def online_server(job: Job, data: Dataset, configs: list[Any]) -> Any:
    """What serves online logits when every split came from the cache: None without augmentation.

    On CPUs the one-actor ensemble; with GPUs the teacher pool (each on its own GPU).
    """
    if not job.spec.data.augment:
        job.result["teacher_placement"] = []
        return None
    if not resolve_gpu(job.spec.scaling.use_gpu):
        job.result["teacher_placement"] = []
        return online_ensemble(job, data, configs)
    with job.stage("teacher_start"):
        pool = start_pool(configs, data, job)
    try:
        job.result["teacher_placement"] = pool.infos()
    except BaseException:
        pool.shutdown()
        raise
    return pool


def online_ensemble(job: Job, data: Dataset, configs: list[Any]) -> Any:
    """The CPU server of online logits: the teachers in the student workers' processes
    (:func:`~raykd.engine.cluster.online_in_process`, ``raykd.train.online``), or every
    teacher in one actor (``raykd.teachers.ensemble``)."""
    if job.in_process_teachers:
        return InProcessTeachers([{"model": c.model, "checkpoint": c.checkpoint} for c in configs])
    with job.stage("teacher_start"):
        sc = job.spec.scaling
        return OnlineEnsemble([{"model": c.model, "checkpoint": c.checkpoint} for c in configs],
                              input_shape=data.input_shape, num_classes=data.num_classes,
                              student_threads=sc.num_workers * max(1, int(sc.cpus_per_worker)),
                              replicas=sc.teacher_replicas)


def train_missing(job: Job, data: Dataset, cache: Any, refs: dict[str, Any], pool: Any,
                   configs: list[Any]) -> dict[int, Any]:
    """Train the teachers without a checkpoint; publish each to the shared cache."""
    out_paths = [str(own_checkpoint(job, i)) for i in range(len(configs))]
    with job.stage("teacher_train"):
        fitted = pool.fit_missing(refs["x_train"], refs["y_train"], out_paths=out_paths,
                                  **job.spec.teacher_train.model_dump())
    for i, fit in sorted(fitted.items()):  # each epoch's loss is in the actor's output (ray.log)
        if "final_loss" in fit and not fit.get("reused"):
            job.say(f"teacher {i}: trained in {fit['seconds']:.1f} s, "
                    f"final loss {fit['final_loss']:.4f}")
        shared = teacher_cache_path(cache, job, i, data.train.fingerprint)
        if shared is not None:
            publish_file(out_paths[i], shared)  # other jobs test is_file(): never a partial file
    return fitted


def record_teachers(job: Job, data: Dataset, logits: dict[str, Logits], configs: list[Any],
                     fitted: dict[int, Any]) -> None:
    """Teacher and ensemble scores into the result, one event per teacher."""
    val, test = dense(logits["val"]), dense(logits["test"])
    rows = []
    for i, c in enumerate(configs):
        fit = fitted.get(i) or earlier_fit(job, i, c.checkpoint)
        scores = model_scores(data, val[i], test[i])
        row = {"index": i, "model": job.spec.teachers[i].model.model_dump(mode="json"),
               "checkpoint": c.checkpoint, "trained_by_raykd": fit is not None,
               "train_seconds": float((fit or {}).get("seconds", 0.0)), **scores}
        rows.append(row)
        job.emit(TeacherReady(index=i, trained=i in fitted, checkpoint=str(c.checkpoint),
                              val_accuracy=row["val_accuracy"], test_accuracy=row["test_accuracy"],
                              test_macro_f1=row["test_macro_f1"], **span_event_fields(scores)))
        job.say(f"teacher {i}: test accuracy {row['test_accuracy']:.4f}" + span_said(scores))
    job.result["teachers"] = rows
    ensemble = model_scores(data, val.mean(0), test.mean(0))
    job.result["ensemble"] = ensemble
    job.say(f"ensemble of {len(configs)}: test accuracy {ensemble['test_accuracy']:.4f}"
            + span_said(ensemble))
