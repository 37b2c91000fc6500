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

from raykd.data import DataError
from raykd.errors import ResourceError
from raykd.jobdir import ensure_dir, publish_file
from raykd.models import load_checkpoint
from raykd.spec import JobSpec, MethodSpec
from raykd.teachers.topk import TopK, dense
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


def checked(logits: np.ndarray | TopK, who: str, split: str) -> np.ndarray | TopK:
    """Raise a named DataError when a teacher's logits hold NaN or inf."""
    parts = (logits.values, logits.rest_lse) if isinstance(logits, TopK) else (logits,)
    for m in range(len(parts[0])):
        if not all(np.isfinite(p[m]).all() for p in parts):
            raise DataError(
                f"{who} {m} logits contain NaN/inf on the {split} split; check that teacher's "
                f"checkpoint (a finite model is required)"
            )
    return logits


def method_row(m: MethodSpec) -> dict[str, Any]:
    return {"label": m.display, **m.model_dump(exclude={"label"})}


def cache_dir(spec: JobSpec) -> str:
    """The shared cache directory: ``cache.dir``, or ``<storage>/cache``."""
    return spec.cache.dir or str(Path(spec.storage) / "cache")


def logit_cache(spec: JobSpec) -> Any:
    """The job's logit cache (no persistence when ``cache.enabled`` is false)."""
    from raykd.teachers.cache import LogitCache

    if not spec.cache.enabled:
        return LogitCache(None)
    return LogitCache(ensure_dir(Path(cache_dir(spec)), "cache.dir" if spec.cache.dir else "storage"))


def resolve_gpu(setting: bool | str) -> bool:
    """``auto`` means: use GPUs when the cluster has any."""
    import ray

    if setting == "auto":
        return ray.cluster_resources().get("GPU", 0) > 0
    return bool(setting)


@dataclass
class TeacherSet:
    """Per-teacher logits (M, N, C) of each split, and the live pool when serving online.

    The logits are in the form the spec asks for (dense, or top-k with ``cache.topk``) in
    every split; accuracies read them through ``raykd.teachers.topk.dense``.
    """

    logits: dict[str, np.ndarray | TopK]
    checkpoints: list[str]
    pool: Any | None = None
    _train_ref: Any = None

    def train_ref(self) -> Any:
        """The train logits in the object store, put once and shared by every student."""
        import ray

        if self._train_ref is None:
            self._train_ref = ray.put(self.logits["train"])
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
        got = pool.split_logits(split, refs[f"x_{split}"], part.fingerprint, cache=cache,
                                dtype=job.spec.cache.dtype, topk=job.spec.cache.topk)
        out[split] = checked(got.logits, who, split)
        stats[split] = {"cache_hits": got.cache_hits, "teacher_forward_examples": got.forward_examples,
                        "seconds": got.seconds, "cache_keys": got.keys}
    job.result.setdefault("logit_cache", {})[who] = stats
    return out


def run_teachers(job: Job, data: Any, cache: Any, refs: dict[str, Any]) -> TeacherSet:
    """Start, train (when needed) and query the teachers; record their accuracies.

    The actors are released on every path out (kept only when they serve online).
    """
    spec = job.spec
    configs = _teacher_configs(job)
    reuse = [_teacher_cache_path(cache.directory, job, i, data.train.fingerprint) for i in range(len(configs))]
    for c, path in zip(configs, reuse, strict=True):
        if c.checkpoint is None and path is not None and path.exists():
            c.checkpoint = str(path)
    with job.timer.stage("teacher_start"):
        pool = start_pool(configs, data, job)
    try:
        logits, fitted = _teacher_work(job, data, cache, refs, pool, configs, reuse)
    except BaseException:
        pool.shutdown()
        raise
    val, test = dense(logits["val"]), dense(logits["test"])
    job.result["teachers"] = [
        {"index": i, "model": spec.teachers[i].model.model_dump(mode="json"), "checkpoint": c.checkpoint,
         "trained_by_raykd": i in fitted, "train_seconds": fitted.get(i, {}).get("seconds", 0.0),
         "val_accuracy": accuracy(val[i], data.val.y), "test_accuracy": accuracy(test[i], data.test.y)}
        for i, c in enumerate(configs)
    ]
    job.result["ensemble"] = {"val_accuracy": ensemble_accuracy(val, data.val.y),
                              "test_accuracy": ensemble_accuracy(test, data.test.y)}
    job.result["teacher_placement"] = pool.infos()
    for t in job.result["teachers"]:
        job.log(f"teacher {t['index']}: test accuracy {t['test_accuracy']:.4f}")
    job.log(f"ensemble of {len(configs)}: test accuracy {job.result['ensemble']['test_accuracy']:.4f}")
    if not spec.data.augment:
        pool.shutdown()  # frozen logits are cached: free the teachers' devices for the students
        pool = None
    return TeacherSet(logits=logits, checkpoints=[str(c.checkpoint) for c in configs], pool=pool)


def _teacher_work(job: Job, data: Any, cache: Any, refs: dict[str, Any], pool: Any, configs: list[Any],
                  reuse: list[Path | None]) -> tuple[dict[str, np.ndarray | TopK], dict[int, Any]]:
    """Train the teachers without a checkpoint (publishing them to the cache), then their logits."""
    out_paths = [str(job.job_dir / "teachers" / f"teacher-{i}.safetensors") for i in range(len(configs))]
    with job.timer.stage("teacher_train"):
        fitted = pool.fit_missing(refs["x_train"], refs["y_train"], out_paths=out_paths,
                                  **job.spec.teacher_train.model_dump())
    for i, path in enumerate(reuse):
        if i in fitted and path is not None:
            publish_file(out_paths[i], path)  # other jobs test path.exists(): never a partial file
    with job.timer.stage("teacher_logits"):
        logits = split_logits(pool, data, job, cache, refs, "teacher")
    return logits, fitted


def _generation_method(m: MethodSpec, generation: int) -> MethodSpec:
    """Generation >= 2 of a born-again run distills from the previous one (kd when 'none')."""
    if generation > 1 and m.method == "none":
        return m.model_copy(update={"method": "kd"})
    return m


def generation_seed(seed: int, generation: int) -> int:
    """The student seed of born-again generation ``generation`` (1-based).

    Generation 1 uses ``train.seed``; generation k > 1 a seed derived from (seed, k), so
    every generation starts from its own weights and batch order (BAN ensembles need
    that diversity). Recorded in each generation's result row.
    """
    if generation == 1:
        return seed
    return int(np.random.SeedSequence([seed, generation]).generate_state(1)[0])


def run_students(job: Job, data: Any, teachers: TeacherSet, cache: Any, refs: dict[str, Any]) -> None:
    """One student per method entry; born-again generations chain teacher -> student."""
    job.result["students"] = []
    for m in job.spec.methods:
        gens = _born_again(job, data, m, teachers, cache, refs)
        row: dict[str, Any] = {**method_row(m), "generations": gens,
                               "val_accuracy": gens[-1]["val_accuracy"], "test_accuracy": gens[-1]["test_accuracy"]}
        if len(gens) > 1:
            row["ban_test_accuracy"] = ban_accuracy([g_["test_logits"] for g_ in gens], data.test.y)
        for g_ in gens:
            g_.pop("test_logits")
        job.result["students"].append(row)
        job.log(f"student [{m.display}]: test accuracy {row['test_accuracy']:.4f}")


def _born_again(job: Job, data: Any, m: MethodSpec, teachers: TeacherSet, cache: Any,
                refs: dict[str, Any]) -> list[dict[str, Any]]:
    """Generation 1 learns from ``teachers``, generation k from generation k-1's logits."""
    from raykd.teachers import TeacherConfig

    source, gens = teachers, []
    try:
        for g in range(1, m.generations + 1):
            gen = train_one(job, data, _generation_method(m, g), source, refs, label=m.display, generation=g)
            gens.append(gen)
            if g == m.generations:
                break
            with job.timer.stage("born_again_teacher"):
                if source is not teachers and source.pool is not None:
                    source.pool.shutdown()
                cfg = TeacherConfig(model=job.spec.student.model.model_dump(), checkpoint=gen["checkpoint"])
                pool = start_pool([cfg], data, job)
                source = TeacherSet(logits={}, checkpoints=[gen["checkpoint"]], pool=pool)
                source.logits = split_logits(pool, data, job, cache, refs, f"{m.display} generation {g}")
                if not job.spec.data.augment:
                    pool.shutdown()
                    source.pool = None
    finally:
        if source is not teachers and source.pool is not None:
            source.pool.shutdown()
    return gens


def check_student_resources(job: Job, *, n_train: int) -> None:
    """Fail fast, with the numbers, when the student workers cannot fit the cluster or the data.

    With augmentation the teachers serve online while students train, and so does a
    born-again generation (one more actor at ``teacher_gpu_fraction``) beside them.
    """
    import ray

    from raykd.train.steps import check_sharding

    spec, sc = job.spec, job.spec.scaling
    check_sharding(n_train, batch_size=spec.train.batch_size, world_size=sc.num_workers)
    have = ray.cluster_resources()
    need_cpu = sc.num_workers * sc.cpus_per_worker
    if need_cpu > have.get("CPU", 0) + 1e-9:
        raise ResourceError(
            f"scaling.num_workers={sc.num_workers} x scaling.cpus_per_worker={sc.cpus_per_worker:g} needs "
            f"{need_cpu:g} CPUs, the cluster has {have.get('CPU', 0):g}"
        )
    if not resolve_gpu(sc.use_gpu):
        return
    online_gpus = 0.0
    born_again = any(m.generations > 1 for m in spec.methods)
    if spec.data.augment:
        online_gpus = (len(spec.teachers) + born_again) * sc.teacher_gpu_fraction
    need_gpu = sc.num_workers + online_gpus
    if need_gpu > have.get("GPU", 0) + 1e-9:
        raise ResourceError(
            f"{sc.num_workers} GPU student workers + {online_gpus:g} GPUs of online teachers "
            f"(augmentation on{', plus a born-again generation' if born_again else ''}) "
            f"need {need_gpu:g} GPUs, the cluster has {have.get('GPU', 0):g}; lower scaling.num_workers "
            f"or scaling.teacher_gpu_fraction"
        )


def train_one(job: Job, data: Any, method: MethodSpec, source: TeacherSet, refs: dict[str, Any], *,
              label: str, generation: int) -> dict[str, Any]:
    """Fit one student on Ray Train and evaluate its best checkpoint on test."""
    from raykd.train.trainer import train_student_ray

    spec = job.spec
    online = source.pool is not None and method.method != "none"
    teacher_ref = None
    if method.method != "none" and not online:
        teacher_ref = source.train_ref()
    seed = generation_seed(spec.train.seed, generation)
    config = {
        "model": spec.student.model.model_dump(), "input_shape": list(data.input_shape),
        "num_classes": data.num_classes, "method": method.model_dump(),
        "train": {**spec.train.model_dump(), "seed": seed},
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
    return {"generation": generation, "method": method.method, "seed": seed, "checkpoint": str(res.checkpoint),
            "val_accuracy": val_acc, "test_accuracy": test_acc, "seconds": res.seconds,
            "startup_seconds": res.startup_seconds, "history": res.history, "test_logits": test_logits}
