"""Run one student on Ray Train: a ``TorchTrainer`` with N DDP workers.

The arrays travel as object-store references inside ``train_loop_config``: every worker
on a node maps the same memory (no copy per worker), and the teachers' logits were
computed once, before the trainer starts.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
import ray.train
import ray.train.torch
from torch import nn

from raykd.models import save_checkpoint
from raykd.train.loop import LoopData, run_student

CHECKPOINT_FILE = "model.safetensors"


@dataclass
class StudentResult:
    """The best checkpoint of one student run and its per-epoch metrics."""

    checkpoint: Path
    history: list[dict[str, Any]]
    best_val_accuracy: float
    seconds: float
    startup_seconds: float


def _quiet_reports() -> None:
    """Ray Train logs every report at INFO on a logger named by its file; keep the epoch lines only."""
    logging.getLogger("ray.train").setLevel(logging.WARNING)
    try:
        from ray.train.v2._internal.execution import context

        context.logger.setLevel(logging.WARNING)
    except (ImportError, AttributeError):  # internal layout moved: only noise is lost
        pass


def _ray_worker(config: dict[str, Any]) -> dict[str, Any]:
    """The per-worker function handed to ``TorchTrainer``."""
    _quiet_reports()
    ctx = ray.train.get_context()
    refs = config["refs"]
    data = LoopData(
        **{k: ray.get(v) for k, v in refs["data"].items()},
        teacher_train=ray.get(refs["teacher_train"]) if refs.get("teacher_train") is not None else None,
        teacher_actors=refs.get("teacher_actors"),
    )
    first = time.time()

    def report(metrics: dict[str, Any], model: nn.Module | None) -> None:
        if model is None:
            ray.train.report(metrics)
            return
        with tempfile.TemporaryDirectory() as tmp:
            save_checkpoint(model, Path(tmp) / CHECKPOINT_FILE, config=config["model"],
                            input_shape=tuple(config["input_shape"]), num_classes=config["num_classes"])
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))

    history = run_student(config, data, report=report, rank=ctx.get_world_rank(),
                          world=ctx.get_world_size(), wrap=ray.train.torch.prepare_model)
    return {"history": history, "started_at": first}


def train_student_ray(config: dict[str, Any], *, refs: dict[str, Any], num_workers: int,
                      use_gpu: bool, cpus_per_worker: float, storage: Path, name: str,
                      out: Path) -> StudentResult:
    """Fit one student with ``num_workers`` Ray Train workers; copy its best checkpoint to ``out``."""
    from ray.train.torch import TorchConfig, TorchTrainer

    start = time.time()
    resources = {"CPU": cpus_per_worker, **({"GPU": 1} if use_gpu else {})}
    trainer = TorchTrainer(
        _ray_worker,
        train_loop_config={**config, "refs": refs},
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        scaling_config=ray.train.ScalingConfig(num_workers=num_workers, use_gpu=use_gpu,
                                               resources_per_worker=resources),
        run_config=ray.train.RunConfig(
            name=name, storage_path=str(storage.resolve()),
            logging_config=ray.train.LoggingConfig(log_level="WARNING"),
            checkpoint_config=ray.train.CheckpointConfig(
                num_to_keep=1, checkpoint_score_attribute="val_accuracy", checkpoint_score_order="max"
            ),
        ),
    )
    result = trainer.fit()
    seconds = time.time() - start
    best = result.get_best_checkpoint(metric="val_accuracy", mode="max")
    if best is None:
        raise RuntimeError(f"student {name!r} reported no checkpoint")
    out.parent.mkdir(parents=True, exist_ok=True)
    with best.as_directory() as directory:
        shutil.copyfile(os.path.join(directory, CHECKPOINT_FILE), out)
    returned = result.return_value or {}
    history = list(returned.get("history", []))
    started = float(returned.get("started_at", start))
    best_val = max((h.get("val_accuracy", float("nan")) for h in history), default=float("nan"))
    return StudentResult(checkpoint=out, history=history, best_val_accuracy=best_val,
                         seconds=seconds, startup_seconds=max(0.0, started - start))
