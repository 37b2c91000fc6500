"""The student's training loop, shared by Ray Train workers, Tune trials and benches.

Per step: a batch of inputs, the teachers' logits for that batch (sliced from the cached
(M, N, C) array, or asked of the teacher actors one step ahead when augmentation makes a
cache impossible), the method's loss from ``raykd.losses``, an optimizer step. Once per
epoch: validation accuracy on rank 0 and one report (never per step: a Ray Train report
costs a controller round trip).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from raykd.losses import distillation_loss
from raykd.models import build_model, load_checkpoint
from raykd.teachers.topk import TopK, from_topk
from raykd.train.steps import (
    accuracy,
    augment_images,
    epoch_batches,
    make_optimizer,
    predict_logits,
    set_threads,
    steps_per_epoch,
)

Reporter = Callable[[dict[str, Any], nn.Module | None], None]


@dataclass
class LoopData:
    """What one loop reads: arrays (zero-copy views from the object store under Ray)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    teacher_train: np.ndarray | TopK | None = None  # (M, N_train, C) cached teacher logits
    teacher_actors: list[Any] | None = None  # online serving (augmentation on)


def _batches(data: LoopData, config: dict[str, Any], epoch: int, rank: int, world: int,
             gen: torch.Generator) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]]:
    """(x, y, teacher logits (M, B, C) or None) for each step of one epoch."""
    train = config["train"]
    augment = bool(config.get("augment"))
    indices = epoch_batches(len(data.y_train), batch_size=train["batch_size"], seed=train["seed"],
                            epoch=epoch, rank=rank, world_size=world)
    if data.teacher_actors:
        yield from _online(data, indices, gen, augment)
        return
    for idx in indices:
        xb = torch.from_numpy(data.x_train[idx])
        if augment:
            xb = augment_images(xb, gen)
        yield xb, torch.from_numpy(data.y_train[idx]), teacher_batch(data.teacher_train, idx)


def teacher_batch(cached: np.ndarray | TopK | None, idx: np.ndarray) -> torch.Tensor | None:
    """The (M, B, C) teacher logits of a batch from the dense or top-k cache."""
    if cached is None:
        return None
    if isinstance(cached, TopK):
        return torch.from_numpy(from_topk(cached, idx))
    return torch.from_numpy(np.ascontiguousarray(cached[:, idx])).float()


def _online(data: LoopData, indices: Iterator[np.ndarray], gen: torch.Generator,
            augment: bool) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]]:
    """Ask the teacher actors for batch i+1's logits before yielding batch i (overlap)."""
    import ray

    pending = None
    for idx in indices:
        xb = torch.from_numpy(data.x_train[idx])
        if augment:
            xb = augment_images(xb, gen)
        refs = [a.logits.remote(xb.numpy()) for a in data.teacher_actors or []]
        if pending is not None:
            yield pending[0], pending[1], torch.from_numpy(np.stack(ray.get(pending[2])))
        pending = (xb, torch.from_numpy(data.y_train[idx]), refs)
    if pending is not None:
        yield pending[0], pending[1], torch.from_numpy(np.stack(ray.get(pending[2])))


def build_student(config: dict[str, Any]) -> nn.Module:
    """The student model, fresh or warm-started from ``config['init_checkpoint']``."""
    torch.manual_seed(config["train"]["seed"])
    if config.get("init_checkpoint"):
        return load_checkpoint(config["init_checkpoint"], input_shape=tuple(config["input_shape"]),
                               num_classes=config["num_classes"])
    return build_model(config["model"], tuple(config["input_shape"]), config["num_classes"])


def run_student(config: dict[str, Any], data: LoopData, *, report: Reporter, rank: int = 0,
                world: int = 1, wrap: Callable[[nn.Module], nn.Module] = lambda m: m) -> list[dict[str, Any]]:
    """Train one student; call ``report(metrics, model_or_None)`` once per epoch.

    ``config`` holds ``model``, ``input_shape``, ``num_classes``, ``method`` (MethodSpec
    fields), ``train`` (TrainSpec fields), ``augment`` and ``threads``. Returns the
    per-epoch metrics.
    """
    set_threads(config.get("threads", 1))
    train, method = config["train"], config["method"]
    raw = build_student(config)
    model = wrap(raw)
    inner: nn.Module = getattr(model, "module", model)
    device = next(inner.parameters()).device
    opt = make_optimizer(model, lr=train["lr"], weight_decay=train["weight_decay"])
    gen = torch.Generator().manual_seed(train["seed"] * 1000 + rank)
    per_epoch = steps_per_epoch(len(data.y_train), batch_size=train["batch_size"], world_size=world)
    total = train["epochs"] * per_epoch
    history: list[dict[str, Any]] = []
    step = 0
    for epoch in range(train["epochs"]):
        start = time.perf_counter()
        model.train()
        loss_sum = torch.zeros(())
        n_steps = 0
        for xb, yb, tl in _batches(data, config, epoch, rank, world, gen):
            xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
            out = model(xb)
            loss = distillation_loss(
                method["method"], out, None if tl is None else tl.to(device), yb,
                temperature=method["temperature"], alpha=method["alpha"],
                incorrect_weight=method["incorrect_weight"], progress=step / max(1, total - 1),
            )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum += loss.detach().cpu()
            n_steps += 1
            step += 1
        seconds = time.perf_counter() - start
        metrics: dict[str, Any] = {
            "epoch": epoch + 1,
            "train_loss": float(loss_sum) / max(1, n_steps),
            "epoch_seconds": seconds,
            "samples_per_s": n_steps * train["batch_size"] / seconds if seconds > 0 else 0.0,
        }
        if rank == 0:
            metrics["val_accuracy"] = accuracy(predict_logits(inner, data.x_val, device=device), data.y_val)
            print(
                f"[{config.get('label', 'student')}] epoch {epoch + 1}/{train['epochs']} "
                f"loss {metrics['train_loss']:.4f} val_acc {metrics['val_accuracy']:.4f} "
                f"({metrics['samples_per_s']:.0f} samples/s per worker)",
                flush=True,
            )
        history.append(metrics)
        report(metrics, inner if rank == 0 else None)
    return history
