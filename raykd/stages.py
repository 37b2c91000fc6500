"""The stages of a job: teachers (train, logits, accuracy) and students (per method).

``raykd.runner.run_job`` calls them in order; each records its wall time in the job's
``Timer`` and its numbers in ``job.result``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from raykd.losses import check_finite_logits
from raykd.models import load_checkpoint
from raykd.spec import JobSpec, MethodSpec
from raykd.train.steps import accuracy, predict_logits

Log = Callable[[str], None]


@dataclass
class Timer:
    """Wall time of each named stage, in seconds."""

    stages: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.stages[name] = self.stages.get(name, 0.0) + time.perf_counter() - start


@dataclass
class Job:
    """State shared by the stages of one run."""

    spec: JobSpec
    job_dir: Path
    log: Log
    timer: Timer = field(default_factory=Timer)
    result: dict[str, Any] = field(default_factory=dict)


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def evaluate_checkpoint(path: Path, x: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    """Accuracy and logits of a saved model over (x, y)."""
    model = load_checkpoint(path)
    logits = predict_logits(model, x)
    return accuracy(logits, y), logits


def ensemble_accuracy(logits: np.ndarray, y: np.ndarray) -> float:
    """Accuracy of the plain logit average over teachers, logits (M, N, C)."""
    return accuracy(logits.mean(0), y)


def ban_accuracy(logits: list[np.ndarray], y: np.ndarray) -> float:
    """Born-again ensemble: the mean of the generations' predicted probabilities."""
    return accuracy(np.mean([_softmax(z) for z in logits], axis=0), y)


def checked(logits: np.ndarray, who: str) -> np.ndarray:
    """Raise a named error when teacher logits hold NaN or inf."""
    import torch

    for m in range(len(logits)):
        check_finite_logits(torch.from_numpy(np.asarray(logits[m])), name=f"{who} {m} logits")
    return logits


def method_row(m: MethodSpec) -> dict[str, Any]:
    return {"label": m.display, **m.model_dump(exclude={"label"})}


def cache_dir(spec: JobSpec) -> str:
    """The shared cache directory: ``cache.dir``, or ``<storage>/cache``."""
    return spec.cache.dir or str(Path(spec.storage) / "cache")


def logit_cache(spec: JobSpec) -> Any:
    """The job's logit cache (no persistence when ``cache.enabled`` is false)."""
    from raykd.teachers.cache import LogitCache

    return LogitCache(cache_dir(spec) if spec.cache.enabled else None)


def resolve_gpu(setting: bool | str) -> bool:
    """``auto`` means: use GPUs when the cluster has any."""
    import ray

    if setting == "auto":
        return ray.cluster_resources().get("GPU", 0) > 0
    return bool(setting)


@dataclass
class TeacherSet:
    """Per-teacher logits (M, N, C) of each split, and the live pool when serving online."""

    logits: dict[str, np.ndarray]
    checkpoints: list[str]
    pool: Any | None = None
    _train_ref: Any = None

    def train_ref(self, topk: int | None) -> Any:
        """The train logits in the object store, put once and shared by every student."""
        import ray

        from raykd.teachers.topk import to_topk

        if self._train_ref is None:
            z = self.logits["train"]
            self._train_ref = ray.put(to_topk(z, topk) if topk and topk < z.shape[-1] else z)
        return self._train_ref


def _teacher_configs(job: Job) -> list[Any]:
    """The spec's teachers as actor configs."""
    from raykd.teachers import TeacherConfig

    return [TeacherConfig(model=t.model.model_dump(), checkpoint=t.checkpoint, seed=t.seed)
            for t in job.spec.teachers]


def _teacher_cache_path(cache_dir: Path | None, job: Job, index: int, fingerprint: str) -> Path | None:
    """Where a raykd-trained teacher is kept for reuse: keyed by everything that made it."""
    import hashlib
    import json

    if cache_dir is None:
        return None
    t = job.spec.teachers[index]
    ident = json.dumps({"model": t.model.model_dump(mode="json"), "seed": t.seed, "data": fingerprint,
                        "train": job.spec.teacher_train.model_dump(mode="json")}, sort_keys=True)
    return cache_dir / "teachers" / f"{hashlib.sha256(ident.encode()).hexdigest()[:32]}.safetensors"


def start_pool(configs: list[Any], data: Any, job: Job) -> Any:
    from raykd.teachers import TeacherPool

    return TeacherPool(configs, input_shape=data.input_shape, num_classes=data.num_classes,
                       use_gpu=resolve_gpu(job.spec.scaling.use_gpu),
                       gpu_fraction=job.spec.scaling.teacher_gpu_fraction)


def split_logits(pool: Any, data: Any, job: Job, cache: Any, refs: dict[str, Any], who: str) -> dict[str, np.ndarray]:
    """Each teacher's logits over train/val/test (cached), checked for NaN/inf."""
    out: dict[str, np.ndarray] = {}
    stats: dict[str, Any] = {}
    for split in ("train", "val", "test"):
        part = getattr(data, split)
        got = pool.split_logits(split, refs[f"x_{split}"], part.fingerprint, cache=cache, dtype=job.spec.cache.dtype)
        out[split] = checked(got.logits, who)
        stats[split] = {"cache_hits": got.cache_hits, "teacher_forward_examples": got.forward_examples,
                        "seconds": got.seconds}
    job.result.setdefault("logit_cache", {})[who] = stats
    return out


def run_teachers(job: Job, data: Any, cache: Any, refs: dict[str, Any]) -> TeacherSet:
    """Start, train (when needed) and query the teachers; record their accuracies."""
    import shutil

    spec = job.spec
    configs = _teacher_configs(job)
    reuse = [_teacher_cache_path(cache.directory, job, i, data.train.fingerprint) for i in range(len(configs))]
    for c, path in zip(configs, reuse, strict=True):
        if c.checkpoint is None and path is not None and path.exists():
            c.checkpoint = str(path)
    with job.timer.stage("teacher_start"):
        pool = start_pool(configs, data, job)
    out_paths = [str(job.job_dir / "teachers" / f"teacher-{i}.safetensors") for i in range(len(configs))]
    with job.timer.stage("teacher_train"):
        fitted = pool.fit_missing(refs["x_train"], refs["y_train"], out_paths=out_paths,
                                  **spec.teacher_train.model_dump())
    for i, path in enumerate(reuse):
        if i in fitted and path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(out_paths[i], path)
    with job.timer.stage("teacher_logits"):
        logits = split_logits(pool, data, job, cache, refs, "teacher")
    job.result["teachers"] = [
        {"index": i, "model": spec.teachers[i].model.model_dump(mode="json"), "checkpoint": c.checkpoint,
         "trained_by_raykd": i in fitted, "train_seconds": fitted.get(i, {}).get("seconds", 0.0),
         "val_accuracy": accuracy(logits["val"][i], data.val.y),
         "test_accuracy": accuracy(logits["test"][i], data.test.y)}
        for i, c in enumerate(configs)
    ]
    job.result["ensemble"] = {"val_accuracy": ensemble_accuracy(logits["val"], data.val.y),
                              "test_accuracy": ensemble_accuracy(logits["test"], data.test.y)}
    job.result["teacher_placement"] = pool.infos()
    for t in job.result["teachers"]:
        job.log(f"teacher {t['index']}: test accuracy {t['test_accuracy']:.4f}")
    job.log(f"ensemble of {len(configs)}: test accuracy {job.result['ensemble']['test_accuracy']:.4f}")
    if not spec.data.augment:
        pool.shutdown()  # frozen logits are cached: free the teachers' devices for the students
        pool = None
    return TeacherSet(logits=logits, checkpoints=[str(c.checkpoint) for c in configs], pool=pool)


def _generation_method(m: MethodSpec, generation: int) -> MethodSpec:
    """Generation >= 2 of a born-again run distills from the previous one (kd when 'none')."""
    if generation > 1 and m.method == "none":
        return m.model_copy(update={"method": "kd"})
    return m


def run_students(job: Job, data: Any, teachers: TeacherSet, cache: Any, refs: dict[str, Any]) -> None:
    """One student per method entry; born-again generations chain teacher -> student."""
    from raykd.teachers import TeacherConfig

    job.result["students"] = []
    for m in job.spec.methods:
        source, gens = teachers, []
        for g in range(1, m.generations + 1):
            method = _generation_method(m, g)
            gen = train_one(job, data, method, source, refs, label=m.display, generation=g)
            gens.append(gen)
            if g < m.generations:
                with job.timer.stage("born_again_teacher"):
                    cfg = TeacherConfig(model=job.spec.student.model.model_dump(), checkpoint=gen["checkpoint"])
                    pool = start_pool([cfg], data, job)
                    logits = split_logits(pool, data, job, cache, refs, f"{m.display} generation {g}")
                    if not job.spec.data.augment:
                        pool.shutdown()
                        pool = None
                    if source is not teachers and source.pool is not None:
                        source.pool.shutdown()
                    source = TeacherSet(logits=logits, checkpoints=[gen["checkpoint"]], pool=pool)
        if source is not teachers and source.pool is not None:
            source.pool.shutdown()
        row: dict[str, Any] = {**method_row(m), "generations": gens,
                               "val_accuracy": gens[-1]["val_accuracy"], "test_accuracy": gens[-1]["test_accuracy"]}
        if len(gens) > 1:
            row["ban_test_accuracy"] = ban_accuracy([g_["test_logits"] for g_ in gens], data.test.y)
        for g_ in gens:
            g_.pop("test_logits")
        job.result["students"].append(row)
        job.log(f"student [{m.display}]: test accuracy {row['test_accuracy']:.4f}")
    if teachers.pool is not None:
        teachers.pool.shutdown()


def check_student_resources(job: Job, *, online_gpus: float) -> None:
    """Fail fast, with the numbers, when the student workers cannot fit the cluster."""
    import ray

    from raykd.teachers import ResourceError

    sc = job.spec.scaling
    have = ray.cluster_resources()
    need_cpu = sc.num_workers * sc.cpus_per_worker
    if need_cpu > have.get("CPU", 0) + 1e-9:
        raise ResourceError(
            f"scaling.num_workers={sc.num_workers} x scaling.cpus_per_worker={sc.cpus_per_worker:g} needs "
            f"{need_cpu:g} CPUs, the cluster has {have.get('CPU', 0):g}"
        )
    if resolve_gpu(sc.use_gpu):
        need_gpu = sc.num_workers + online_gpus
        if need_gpu > have.get("GPU", 0) + 1e-9:
            raise ResourceError(
                f"{sc.num_workers} GPU student workers + {online_gpus:g} GPUs of online teachers need "
                f"{need_gpu:g} GPUs, the cluster has {have.get('GPU', 0):g}; lower scaling.num_workers or "
                f"scaling.teacher_gpu_fraction"
            )


def train_one(job: Job, data: Any, method: MethodSpec, source: TeacherSet, refs: dict[str, Any], *,
              label: str, generation: int) -> dict[str, Any]:
    """Fit one student on Ray Train and evaluate its best checkpoint on test."""
    from raykd.train.trainer import train_student_ray

    spec = job.spec
    online = source.pool is not None and method.method != "none"
    teacher_ref = None
    if method.method != "none" and not online:
        teacher_ref = source.train_ref(spec.cache.topk)
    config = {
        "model": spec.student.model.model_dump(), "input_shape": list(data.input_shape),
        "num_classes": data.num_classes, "method": method.model_dump(), "train": spec.train.model_dump(),
        "augment": spec.data.augment, "threads": max(1, int(spec.scaling.cpus_per_worker)),
        "label": f"{label} g{generation}" if generation > 1 else label,
        "init_checkpoint": spec.student.checkpoint,
    }
    if online:
        source.pool.set_clients(spec.scaling.num_workers)
    name = f"student-{len(job.result['students'])}-g{generation}"
    with job.timer.stage("students"):
        res = train_student_ray(
            config,
            refs={"data": {k: refs[k] for k in ("x_train", "y_train", "x_val", "y_val")},
                  "teacher_train": teacher_ref,
                  "teacher_actors": source.pool.actors if online else None},
            num_workers=spec.scaling.num_workers, use_gpu=resolve_gpu(spec.scaling.use_gpu),
            cpus_per_worker=spec.scaling.cpus_per_worker, storage=job.job_dir / "ray_train", name=name,
            out=job.job_dir / "students" / f"{name}.safetensors",
        )
    test_acc, test_logits = evaluate_checkpoint(res.checkpoint, data.test.x, data.test.y)
    val_acc, _ = evaluate_checkpoint(res.checkpoint, data.val.x, data.val.y)
    return {"generation": generation, "method": method.method, "checkpoint": str(res.checkpoint),
            "val_accuracy": val_acc, "test_accuracy": test_acc, "seconds": res.seconds,
            "startup_seconds": res.startup_seconds, "history": res.history, "test_logits": test_logits}
