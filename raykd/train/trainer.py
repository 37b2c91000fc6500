"""Run one student on Ray Train: a ``TorchTrainer`` with N DDP workers.

``train_loop_config`` holds typed values under fixed keys (:func:`worker_inputs`): the
:class:`~raykd.train.config.StudentConfig`, the arrays as object-store references (every
worker on a node maps the same memory, no copy per worker; the teachers' logits were
computed once, before the trainer starts), and the state to resume from. Each epoch's
report carries the student's full state (:mod:`raykd.train.state`); a restarted worker
group resumes from it, and a driver-side callback turns each report into an ``epoch``
event.
"""

from __future__ import annotations

import logging
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import ray
import ray.train
import ray.train.torch
from ray.train import UserCallback

from raykd.core.faults import after_epoch, step_hook
from raykd.train.config import StudentConfig
from raykd.train.loop import run_student
from raykd.train.runs import StudentResult, StudentRun, loop_data, published
from raykd.train.state import TrainState, load_progress, save_state

__all__ = ["EpochEvents", "StudentResult", "StudentRun", "train_student_ray", "worker_inputs"]


def _quiet_reports() -> None:
    """Ray Train logs every report at INFO on a logger named by its file; keep epoch lines only."""
    logging.getLogger("ray.train").setLevel(logging.WARNING)
    try:
        from ray.train.v2._internal.execution import context

        context.logger.setLevel(logging.WARNING)
    except (ImportError, AttributeError):  # internal layout moved: only noise is lost
        pass


class EpochEvents(UserCallback):
    """Turns Ray Train reports into ``epoch`` events, on the controller (never in workers)."""

    def __init__(self, run: StudentRun) -> None:
        self.run = run

    def after_report(self, run_context: Any, metrics: list[dict[str, Any]],
                     checkpoint: Any) -> None:
        self.run.epoch_event(metrics[0] if metrics else {},
                             None if checkpoint is None else str(checkpoint.path))

    def after_exception(self, run_context: Any, worker_exceptions: dict[int, Exception]) -> None:
        self.run.restarted(next(iter(worker_exceptions.values()), None))


def worker_inputs(student: StudentConfig, refs: dict[str, Any], *, resume_from: str | None = None,
                  fault: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ``train_loop_config`` of :func:`_ray_worker`.

    ``student`` is what to train; ``refs`` the object refs of the arrays (``data``: the
    four split arrays by name, ``teacher_train``: the cached (M, N, C) logits or None,
    ``teacher_actors``: the online teachers or None); ``resume_from`` a state directory of
    an earlier run; ``fault`` the test-only fault switch.
    """
    return {"student": student, "refs": refs, "resume_from": resume_from, "fault": fault}


def _ray_worker(config: dict[str, Any]) -> None:
    """The per-worker function handed to ``TorchTrainer`` (``config``: :func:`worker_inputs`).

    Resumes from the last checkpoint of this run, or else from ``resume_from``.
    """
    _quiet_reports()
    ctx = ray.train.get_context()
    student: StudentConfig = config["student"]
    refs: dict[str, Any] = config["refs"]
    data = loop_data(refs)

    def report(metrics: dict[str, Any], state: TrainState | None) -> None:
        if state is None:
            ray.train.report(metrics)
        else:
            with tempfile.TemporaryDirectory() as tmp:
                save_state(state, tmp, config=student)
                ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))
        if ctx.get_world_rank() == 0:
            after_epoch(config.get("fault"), int(metrics["epoch"]))

    checkpoint = ray.train.get_checkpoint()
    resume_from = config.get("resume_from")
    with checkpoint.as_directory() if checkpoint else nullcontext(resume_from) as resume:
        run_student(student, data, report=report, rank=ctx.get_world_rank(),
                    world=ctx.get_world_size(), wrap=ray.train.torch.prepare_model, resume=resume,
                    on_step=step_hook(config.get("fault")) if ctx.get_world_rank() == 0 else None)


def train_student_ray(config: StudentConfig, *, refs: dict[str, Any], num_workers: int,
                      use_gpu: bool, cpus_per_worker: float, storage: Path, name: str,
                      out: Path, run: StudentRun | None = None) -> StudentResult:
    """Fit one student with ``num_workers`` Ray Train workers; copy its best weights to ``out``.

    Workers that die are restarted up to ``run.max_failures`` times and resume from the
    last reported state (no finished epoch runs twice). ``run.resume_from`` continues an
    earlier run of the same job. ``name`` must be new under ``storage``: Ray Train would
    otherwise restore that run's checkpoints into this one.
    """
    from ray.train.torch import TorchConfig, TorchTrainer

    run = run or StudentRun(student=0, generation=1, label=config.label, epochs=config.train.epochs)
    start = time.time()
    if run.resume_from is not None:  # stopped after its last epoch, before it was recorded
        done = load_progress(run.resume_from)
        if done.epoch >= run.epochs:
            return published(Path(run.resume_from), done, out, seconds=0.0)
    resources = {"CPU": cpus_per_worker, **({"GPU": 1} if use_gpu else {})}
    trainer = TorchTrainer(
        _ray_worker,
        train_loop_config=worker_inputs(config, refs, resume_from=run.resume_from, fault=run.fault),
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        scaling_config=ray.train.ScalingConfig(num_workers=num_workers, use_gpu=use_gpu,
                                               resources_per_worker=resources),
        run_config=ray.train.RunConfig(
            name=name, storage_path=str(storage.resolve()),
            logging_config=ray.train.LoggingConfig(log_level="WARNING"),
            failure_config=ray.train.FailureConfig(max_failures=run.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),  # the latest two
            callbacks=[EpochEvents(run)] if run.sink is not None else [],
        ),
    )
    result = trainer.fit()
    seconds = time.time() - start
    if result.checkpoint is None:
        raise RuntimeError(f"student {name!r} reported no checkpoint")
    with result.checkpoint.as_directory() as directory:
        return published(Path(directory), load_progress(directory), out, seconds=seconds)

