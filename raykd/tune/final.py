"""The sweep's last stage: the best configuration's student, retrained on train+val and tested.

Its checkpoint carries the class names and the fitted preprocessing (a table's or an
image dataset's) in its metadata, as a ``raykd run`` student's does, so that
``raykd predict`` and ``raykd export`` take it alone (or the sweep's directory).

The teachers' logits of train+val are the cached train and val logits concatenated along
the example axis (M, N_train + N_val, C); no teacher runs again.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from raykd.core.jobdir import JobLayout
from raykd.data import Dataset
from raykd.engine.context import Job
from raykd.engine.prepare import TeacherSet
from raykd.losses.topk import TopK, concat_rows
from raykd.models import describe_checkpoint, save_checkpoint
from raykd.train.config import StudentConfig
from raykd.train.steps import accuracy, predict_logits
from raykd.tune.space import SWEPT, TrialPlan, trial_method


def _retrain_task(
    config: StudentConfig,
    x: np.ndarray,
    y: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    logits: np.ndarray | TopK | None,
    use_gpu: bool,
) -> tuple[Any, list[dict[str, Any]]]:
    """Train the best configuration's student in one process; return the model and history."""
    from raykd.train.loop import LoopData, run_student

    model: list[Any] = []

    def keep(metrics: dict[str, Any], state: Any) -> None:
        model[:] = [state.model]

    data = LoopData(x_train=x, y_train=y, x_val=x_val, y_val=y_val, teacher_train=logits)
    history = run_student(
        config, data, report=keep, wrap=(lambda m: m.to("cuda")) if use_gpu else (lambda m: m)
    )
    return model[0].cpu(), history


def final_student(
    job: Job,
    data: Dataset,
    teachers: TeacherSet,
    shared: dict[str, Any],
    best: dict[str, Any],
    plan: TrialPlan,
) -> dict[str, Any]:
    """Retrain ``best`` on train+val (teacher logits concatenated), test it, save it.

    One process with the whole CPUs the trial's workers had (at least one): the global
    batch and the gradient are those of the N-worker run (DDP averages the ranks'
    gradients).
    """
    import ray

    spec, start = job.spec, time.perf_counter()
    method = trial_method(spec.methods[0], best)
    x = np.concatenate([data.train.x, data.val.x])
    y = np.concatenate([data.train.y, data.val.y])
    logits = None
    if method.method != "none":
        logits = concat_rows(teachers.logits["train"], teachers.logits["val"])
    cpus = max(1, math.floor(min(plan.cpus_per_trial, ray.cluster_resources().get("CPU", 1))))
    config = replace(shared["student"], threads=cpus, method=method, label="best on train+val")
    task = ray.remote(_retrain_task).options(num_cpus=cpus, num_gpus=1 if shared["use_gpu"] else 0)
    model, history = ray.get(
        task.remote(config, x, y, data.val.x, data.val.y, logits, shared["use_gpu"])
    )
    path = save_checkpoint(
        model,
        job.layout.best_student,
        **config.checkpoint_meta,
        extra={"method": method.model_dump(), "trained_on": "train+val"},
        class_names=data.class_names,
        preprocessing=data.prep_record,
    )
    test_acc = accuracy(predict_logits(model, data.test.x), data.test.y)
    job.log(f"best student ({method.display}) retrained on train+val: test accuracy {test_acc:.4f}")
    return {
        "checkpoint": str(path),
        "test_accuracy": test_acc,
        "method": method.model_dump(),
        "trained_on": {"train": len(data.train), "val": len(data.val)},
        "history": history,
        "seconds": time.perf_counter() - start,
        "note": "history's val_accuracy is on val, which is part of the training data here",
    }


def reuse_final(job_dir: Path, best: dict[str, Any], data: Dataset) -> dict[str, Any] | None:
    """The final student of an earlier call, when it was trained for this same best config
    (its checkpoint then given the class names and preprocessing, as a new one has them)."""
    path = JobLayout(job_dir).sweep
    if not path.exists():
        return None
    old = json.loads(path.read_text())
    final, prev = old.get("final"), old.get("best") or {}
    if not final or not Path(final["checkpoint"]).exists():
        return None
    if any(prev.get(k) != best.get(k) for k in ("trial_id", *SWEPT)):
        return None
    if data.class_names is not None or data.prep_record is not None:
        describe_checkpoint(final["checkpoint"], class_names=data.class_names,
                            preprocessing=data.prep_record)
    return dict(final)
