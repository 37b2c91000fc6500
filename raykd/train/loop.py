"""The student's training loop, shared by Ray Train workers, Tune trials and benches.

Per step: a batch of inputs, the teachers' logits for that batch (sliced from the cached
(M, N, C) array, or asked of the teacher actors one step ahead when augmentation makes a
cache impossible), the method's loss from ``raykd.losses``, an optimizer step. Once per
epoch: validation accuracy on rank 0 and one report (never per step: a Ray Train report
costs a controller round trip), carrying the state a restarted worker resumes from.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from raykd.losses import distillation_loss
from raykd.losses.topk import TopK, from_topk
from raykd.models import build_model, load_checkpoint
from raykd.spec import MethodSpec
from raykd.train.config import StudentConfig
from raykd.train.state import Progress, TrainState, restore_state
from raykd.train.steps import (
    accuracy,
    augment_images,
    epoch_batches,
    make_optimizer,
    predict_logits,
    set_threads,
    steps_per_epoch,
)

Reporter = Callable[[dict[str, Any], TrainState | None], None]


@dataclass
class LoopData:
    """What one loop reads: arrays (zero-copy views from the object store under Ray)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    teacher_train: np.ndarray | TopK | None = None  # (M, N_train, C) cached teacher logits
    teacher_actors: list[Any] | None = None  # online serving (augmentation on)


Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]
"""(inputs, labels, teacher logits (M, B, C) or None) of one step."""


def _batches(data: LoopData, config: StudentConfig, epoch: int, rank: int, world: int,
             gen: torch.Generator) -> Iterator[Batch]:
    """(x, y, teacher logits (M, B, C) or None) for each step of one epoch."""
    augment = config.augment
    indices = epoch_batches(len(data.y_train), batch_size=config.train.batch_size,
                            seed=config.train.seed, epoch=epoch, rank=rank, world_size=world)
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


def build_student(config: StudentConfig) -> nn.Module:
    """The student model, fresh or warm-started from ``config.init_checkpoint``."""
    torch.manual_seed(config.train.seed)
    if config.init_checkpoint:
        return load_checkpoint(config.init_checkpoint, input_shape=config.input_shape,
                               num_classes=config.num_classes)
    return build_model(config.model, config.input_shape, config.num_classes)


def epoch_seed(seed: int, epoch: int, rank: int) -> int:
    """The seed of one rank's random draws (augmentation, dropout) in one epoch."""
    return int(np.random.SeedSequence([seed, epoch, rank]).generate_state(1)[0])


def run_student(config: StudentConfig, data: LoopData, *, report: Reporter, rank: int = 0,
                world: int = 1, wrap: Callable[[nn.Module], nn.Module] = lambda m: m,
                resume: str | Path | None = None) -> list[dict[str, Any]]:
    """Train one student; call ``report(metrics, state_or_None)`` once per epoch.

    ``config`` says what to train (:class:`~raykd.train.config.StudentConfig`). Rank 0 passes its
    :class:`~raykd.train.state.TrainState` (model, optimizer, progress, best weights) to
    ``report``; other ranks pass None. ``resume`` is a state directory
    (:mod:`raykd.train.state`) to continue from: the finished epochs are not run again.
    Returns the per-epoch metrics of the whole run (resumed epochs included).
    """
    set_threads(config.threads)
    train = config.train
    model = wrap(build_student(config))
    inner: nn.Module = getattr(model, "module", model)
    device = next(inner.parameters()).device
    opt = make_optimizer(model, lr=train.lr, weight_decay=train.weight_decay)
    state = TrainState(model=inner, optimizer=opt, progress=Progress())
    if resume is not None:
        state = restore_state(resume, inner, opt, config)
    per_epoch = steps_per_epoch(len(data.y_train), batch_size=train.batch_size, world_size=world)
    total = train.epochs * per_epoch
    step_fn = _step_fn(model, opt, config.method, device, total)
    for epoch in range(state.progress.epoch, train.epochs):
        torch.manual_seed(epoch_seed(train.seed, epoch, rank))
        gen = torch.Generator().manual_seed(epoch_seed(train.seed + 1, epoch, rank))
        start = time.perf_counter()
        model.train()
        loss_sum = torch.zeros((), device=device)
        n_steps = 0
        for xb, yb, tl in _batches(data, config, epoch, rank, world, gen):
            loss_sum += step_fn(xb, yb, tl, state.progress.step)
            n_steps += 1
            state.progress.step += 1
        seconds = time.perf_counter() - start
        metrics: dict[str, Any] = {
            "epoch": epoch + 1,
            "train_loss": float(loss_sum) / max(1, n_steps),
            "epoch_seconds": seconds,
            "samples_per_s": (n_steps * len(yb) * world / seconds
                              if seconds > 0 and n_steps else 0.0),
        }
        if rank == 0:
            val_logits = predict_logits(inner, data.x_val, device=device)
            metrics["val_accuracy"] = accuracy(val_logits, data.y_val)
            _track_best(state, metrics)
        state.progress.epoch = epoch + 1
        state.progress.history.append(metrics)
        report(metrics, state if rank == 0 else None)
    return state.progress.history


def _track_best(state: TrainState, metrics: dict[str, Any]) -> None:
    """Keep a copy of the weights of the best-validation epoch (the first epoch counts)."""
    val = metrics.get("val_accuracy")
    if state.progress.improved(val):
        state.progress.best_val = None if val is None or math.isnan(val) else float(val)
        state.progress.best_epoch = metrics["epoch"]
        state.best_weights = {k: v.detach().clone() for k, v in state.model.state_dict().items()}


def _step_fn(model: nn.Module, opt: torch.optim.Optimizer, method: MethodSpec,
             device: torch.device, total: int) -> Callable[..., torch.Tensor]:
    """One optimizer step of the method's loss; returns the detached loss."""
    name, temperature, alpha = method.method, method.temperature, method.alpha
    incorrect_weight, last = method.incorrect_weight, max(1, total - 1)

    def step(xb: torch.Tensor, yb: torch.Tensor, tl: torch.Tensor | None,
             index: int) -> torch.Tensor:
        xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
        out = model(xb)
        loss = distillation_loss(
            name, out, None if tl is None else tl.to(device), yb, temperature=temperature,
            alpha=alpha, incorrect_weight=incorrect_weight, progress=index / last,
        )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.detach()

    return step
