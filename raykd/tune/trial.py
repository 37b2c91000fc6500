"""The Tune trainables: one trial trains one student on the shared teacher logits.

Every trial gets the same ``shared`` mapping through ``tune.with_parameters`` (put in the
object store once): object refs of the data splits and of the teachers' (M, N, C) train
logits, the base :class:`~raykd.train.config.StudentConfig` (``methods[0]``), and the
plan. A trial never starts a teacher: it maps the logits array zero-copy and reports
``teacher_forward_examples = 0``.

Every report carries ``trial_seconds`` (the trial's wall time so far) and
``trial_started_at`` (when the trial's function began, seconds since the epoch): with Tune's
``pid`` they place each trial on its process's timeline (``raykd bench sweep``).

Two shapes of trial:

- ``student_trial`` (``scaling.num_workers == 1``): runs :func:`raykd.train.loop.run_student`
  inside the trial process and calls ``ray.tune.report`` once per epoch. No nested
  trainer: RAY-NOTES measured ~18 s of start-up per nested TorchTrainer.
- ``trainer_trial`` (``num_workers > 1``): the Train V2 pattern, a driver function per
  trial that builds and fits a ``TorchTrainer``; a ``TuneReportCallback`` forwards each
  epoch's report to Tune (so ASHA can stop it).

``naive`` mode (a benchmark baseline) makes each trial build the teachers from their
checkpoints and run their forward passes over the train split itself.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np

from raykd.core.spec import MethodSpec
from raykd.losses.topk import TopK, in_form
from raykd.teachers import Teacher
from raykd.train.config import StudentConfig
from raykd.train.loop import LoopData, run_student
from raykd.tune.space import resolved, trial_method

Shared = dict[str, Any]


def trial_label(config: dict[str, Any]) -> str:
    """A short name for a trial's printed epoch lines: method, W, T, alpha."""
    config = resolved(config)
    return (
        f"{config.get('method')} W={float(config.get('incorrect_weight', 0)):.3g} "
        f"T={float(config.get('temperature', 0)):.3g} a={float(config.get('alpha', 0)):.3g}"
    )


def naive_teacher_logits(shared: Shared, x_train: np.ndarray) -> tuple[np.ndarray | TopK, int]:
    """Build every teacher from its checkpoint and compute its train logits (M, N, C) here.

    Returns the logits, in the spec's form (top-k with ``cache.topk``, as the shared mode
    hands them), and the number of examples the teachers ran forward over.
    """
    naive = shared["naive"]
    teachers = [
        Teacher(
            i,
            t["model"],
            tuple(naive["input_shape"]),
            naive["num_classes"],
            t["checkpoint"],
            threads=shared["student"].threads,
        )
        for i, t in enumerate(naive["teachers"])
    ]
    logits = np.stack([t.logits(x_train) for t in teachers]).astype(np.float32, copy=False)
    return in_form(logits, naive.get("topk")), sum(t.forward_examples for t in teachers)


def teacher_logits(
    shared: Shared, method: MethodSpec, x_train: np.ndarray
) -> tuple[np.ndarray | TopK | None, dict[str, float]]:
    """The teachers' train logits for this trial, and what obtaining them cost.

    Shared mode maps the driver's single object-store copy (no forward pass); naive mode
    computes them; ``method: none`` needs none.
    """
    import ray

    start = time.perf_counter()
    if method.method == "none":
        logits, forward = None, 0
    elif shared.get("naive"):
        logits, forward = naive_teacher_logits(shared, x_train)
    else:
        logits, forward = ray.get(shared["teacher_train"]), 0
    return logits, {
        "teacher_forward_examples": forward,
        "teacher_seconds": time.perf_counter() - start,
    }


def loop_config(shared: Shared, config: dict[str, Any]) -> StudentConfig:
    """The trial's student: the shared base with the trial's method and label."""
    base: StudentConfig = shared["student"]
    return replace(base, method=trial_method(base.method, config), label=trial_label(config))


def _device_wrap(use_gpu: bool) -> Callable[[Any], Any]:
    return (lambda m: m.to("cuda")) if use_gpu else (lambda m: m)


def student_trial(config: dict[str, Any], shared: Shared) -> None:
    """One trial with one student process: ``run_student`` right here, one report per epoch."""
    import ray
    from ray import tune

    start, started_at = time.perf_counter(), time.time()
    cfg = loop_config(shared, config)
    x_train = ray.get(shared["x_train"])
    logits, cost = teacher_logits(shared, cfg.method, x_train)
    data = LoopData(
        x_train=x_train,
        y_train=ray.get(shared["y_train"]),
        x_val=ray.get(shared["x_val"]),
        y_val=ray.get(shared["y_val"]),
        teacher_train=logits,
    )

    def report(metrics: dict[str, Any], model: Any) -> None:
        tune.report({**metrics, **cost, "trial_seconds": time.perf_counter() - start,
                     "trial_started_at": started_at})

    run_student(cfg, data, report=report, wrap=_device_wrap(shared["use_gpu"]))


def _forwarding_callback(extra: dict[str, float], started: float) -> Any:
    """A TuneReportCallback that adds the trial's teacher cost and wall time to each report."""
    from ray.tune.integration.ray_train import TuneReportCallback

    class _Forward(TuneReportCallback):
        def after_report(
            self, run_context: Any, metrics: list[dict[str, Any]], checkpoint: Any
        ) -> None:
            row = {**metrics[0], **extra, "trial_seconds": time.time() - started,
                   "trial_started_at": started}
            super().after_report(run_context, [row, *metrics[1:]], checkpoint)

    return _Forward()


def fit_trainer(
    inputs: dict[str, Any],
    *,
    scaling: dict[str, Any],
    use_gpu: bool,
    name: str,
    storage: str,
    callback: Any,
) -> None:
    """Build and fit the trial's TorchTrainer (runs in the host task, see ``trainer_trial``).

    ``inputs`` is the workers' ``train_loop_config`` (:func:`raykd.train.trainer.worker_inputs`).
    """
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer

    from raykd.train.trainer import _ray_worker

    resources = {"CPU": scaling["cpus_per_worker"], **({"GPU": 1} if use_gpu else {})}
    TorchTrainer(
        _ray_worker,
        train_loop_config=inputs,
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        scaling_config=ray.train.ScalingConfig(
            num_workers=scaling["num_workers"], use_gpu=use_gpu, resources_per_worker=resources
        ),
        run_config=ray.train.RunConfig(
            name=name,
            storage_path=storage,
            callbacks=[callback],
            logging_config=ray.train.LoggingConfig(log_level="WARNING"),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=1),
        ),
    ).fit()


def trainer_trial(config: dict[str, Any], shared: Shared) -> None:
    """One trial with N > 1 workers: build and fit a TorchTrainer (the Train V2 pattern).

    The trainer runs in a 0-CPU host task whose environment names this cluster
    (``RAY_ADDRESS``): Ray Train's placement-group cleaner finds its cluster through the
    state API, which fails when a machine runs several Ray instances, and then a trial
    that Tune stops early (ASHA) would leak its workers' CPUs and stall the next trials.
    """
    import ray
    from ray import tune

    from raykd.train.trainer import worker_inputs

    started = time.time()
    cfg = loop_config(shared, config)
    method = cfg.method
    teacher_ref = shared["teacher_train"]
    cost = {"teacher_forward_examples": 0, "teacher_seconds": 0.0}
    if shared.get("naive") and method.method != "none":
        logits, cost = teacher_logits(shared, method, ray.get(shared["x_train"]))
        teacher_ref = ray.put(logits)
    refs = {
        "data": {k: shared[k] for k in ("x_train", "y_train", "x_val", "y_val")},
        "teacher_train": None if method.method == "none" else teacher_ref,
        "teacher_actors": None,
    }
    host = ray.remote(fit_trainer).options(
        num_cpus=0, runtime_env={"env_vars": {"RAY_ADDRESS": ray.get_runtime_context().gcs_address}}
    )
    ray.get(
        host.remote(
            worker_inputs(cfg, refs),
            scaling=shared["scaling"],
            use_gpu=shared["use_gpu"],
            name=f"trial_{tune.get_context().get_trial_id()}",
            storage=shared["train_storage"],
            callback=_forwarding_callback(cost, started),
        )
    )


def trainable_for(nested: bool) -> Callable[[dict[str, Any], Shared], None]:
    """The trainable for one (``student_trial``) or several (``trainer_trial``) workers."""
    return trainer_trial if nested else student_trial
