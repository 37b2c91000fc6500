"""run_job(spec): the stages of one distillation job, in order.

1. data: load and split, fingerprint each split;
2. teachers: one Ray actor each (own GPU when there are GPUs); train those without a
   checkpoint, in parallel;
3. teacher logits: each teacher's logits over train/val/test, from the cache or computed
   once; teachers, ensemble accuracy;
4. students: one Ray Train fit per method (and per born-again generation), reading the
   cached logits from the object store (or the live actors when augmentation is on);
5. result.json with every accuracy, the hyperparameters and the time of each stage.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from raykd.data import Dataset, load_dataset
from raykd.jobdir import claim_job_dir, new_job_dir, resolve_spec_paths
from raykd.models import CheckpointError, load_checkpoint
from raykd.spec import JobSpec, SpecError
from raykd.stages import Job, check_student_resources, logit_cache, run_students, run_teachers

# Ray Train polls its workers every RAY_TRAIN_HEALTH_CHECK_INTERVAL_S (2 s by default):
# each epoch report would wait for it. Workers print their own epoch lines.
RAY_ENV = {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.2", "RAY_TRAIN_ENABLE_PRINT_PATCH": "0"}


def ensure_ray(*, num_cpus: int | None = None) -> None:
    """Join the cluster named by RAY_ADDRESS, or start a local Ray."""
    import ray

    if ray.is_initialized():
        return
    env = {k: os.environ.get(k, v) for k, v in RAY_ENV.items()}
    os.environ.update(env)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")  # one line per teacher epoch, not "repeated 3x"
    if os.environ.get("RAY_ADDRESS"):
        ray.init(address=os.environ["RAY_ADDRESS"], log_to_driver=True, logging_level="WARNING")
    else:
        # The dashboard stays on loopback; Ray Train's state queries need it.
        ray.init(num_cpus=num_cpus, dashboard_host="127.0.0.1", log_to_driver=True,
                 logging_level="WARNING", runtime_env={"env_vars": env})


def put_splits(data: Dataset) -> dict[str, Any]:
    """Every split's arrays in the object store, once: workers and actors map them zero-copy."""
    import ray

    refs: dict[str, Any] = {}
    for split in ("train", "val", "test"):
        part = getattr(data, split)
        refs[f"x_{split}"] = ray.put(part.x)
        refs[f"y_{split}"] = ray.put(part.y)
    return refs


def check_models(spec: JobSpec, data: Dataset) -> None:
    """Every declared class count and every checkpoint must agree with the data."""
    topk = spec.cache.topk
    if topk is not None and topk >= data.num_classes:
        raise SpecError(
            f"cache.topk={topk} must be below the number of classes ({data.num_classes}) of dataset "
            f"{spec.data.dataset!r}; give 1..{data.num_classes - 1}, or null for dense logits"
        )
    named = [(f"teachers[{i}]", t) for i, t in enumerate(spec.teachers)] + [("student", spec.student)]
    for where, t in named:
        declared = t.model.num_classes
        if declared is not None and declared != data.num_classes:
            raise CheckpointError(
                f"{where}.model.num_classes={declared} but dataset {spec.data.dataset!r} has labels in "
                f"[0, {data.num_classes}) ({data.num_classes} classes)"
            )
        if t.checkpoint is not None:
            load_checkpoint(t.checkpoint, config=t.model.model_dump(), input_shape=data.input_shape,
                            num_classes=data.num_classes)


def run_job(spec: JobSpec, *, job_dir: Path | None = None, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run every stage of ``spec``; write and return ``result.json``'s content.

    ``job_dir`` must be new or empty (a job directory belongs to one run); by default a
    fresh ``<storage>/<name>-<time>-<random>``. Every path in the spec is made absolute
    first, so actors and workers on other nodes or directories find the same files.
    """
    start = time.perf_counter()
    spec = resolve_spec_paths(spec)
    job_dir = claim_job_dir(job_dir or new_job_dir(spec.storage, spec.name), spec.model_dump_json(indent=2))
    job = Job(spec=spec, job_dir=job_dir, log=log)
    with job.timer.stage("data"):
        data = load_dataset(spec.data.dataset, val_fraction=spec.data.val_fraction,
                            test_fraction=spec.data.test_fraction, seed=spec.data.seed,
                            label_column=spec.data.label_column, train_limit=spec.data.train_limit)
        check_models(spec, data)
    log(f"data: {data.name} train {len(data.train)} / val {len(data.val)} / test {len(data.test)}, "
        f"{data.num_classes} classes, input {data.input_shape}")
    with job.timer.stage("ray_init"):
        ensure_ray()
    check_student_resources(job, n_train=len(data.train))
    cache = logit_cache(spec)
    refs = put_splits(data)
    teachers = run_teachers(job, data, cache, refs)
    try:
        run_students(job, data, teachers, cache, refs)
    finally:
        if teachers.pool is not None:
            teachers.pool.shutdown()
    job.result.update({
        "job": spec.name,
        "job_dir": str(job_dir),
        "dataset": {"name": data.name, "train": len(data.train), "val": len(data.val),
                    "test": len(data.test), "num_classes": data.num_classes,
                    "fingerprints": {s: getattr(data, s).fingerprint for s in ("train", "val", "test")}},
        "spec": json.loads(spec.model_dump_json()),
        "timings": {**job.timer.stages, "total": time.perf_counter() - start},
    })
    (job_dir / "result.json").write_text(json.dumps(job.result, indent=2))
    return job.result
