"""The student's training loop, shared by Ray Train workers, Tune trials and benches.

Per step: a batch of inputs, the teachers' logits for that batch (gathered by index from
the cached (M, N, C) tensor, or asked of the teacher actors one step ahead when
augmentation makes a cache impossible), the method's loss (``raykd.losses.method_loss``,
resolved once), an optimizer step. No host sync and no input check inside the step: the
labels' range and the cached logits' finiteness are checked once before the first epoch
(:func:`check_loop_data`), and the loss is summed as a tensor and read once per epoch.
Once per epoch: validation accuracy on rank 0 and one report (never per step: a Ray Train
report costs a controller round trip), carrying the state a restarted worker resumes from.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from raykd.data.span_data import window_accuracy
from raykd.data.splits import DataError
from raykd.losses import accuracy_weights
from raykd.losses.topk import TopK, from_topk
from raykd.metrics.squad import squad_scores
from raykd.models import build_model, load_checkpoint
from raykd.train.config import StudentConfig
from raykd.train.online import LocalEnsemble, ask_actors, ask_local, split_threads, step_ahead
from raykd.train.state import Progress, TrainState, restore_state
from raykd.train.step_plan import StepPlan, step_fn
from raykd.train.steps import (
    accuracy,
    augment_images,
    epoch_batches,
    make_optimizer,
    node_cpus,
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
    teacher_actors: list[Any] | None = None  # online serving (augmentation on) by actors
    teacher_replicas: bool = False  # teacher_actors are copies of one ensemble: rank r asks r mod n
    teacher_local: list[dict[str, Any]] | None = None  # online serving in this process: configs


Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]
"""(inputs, labels, teacher logits (M, B, C) or None) of one step."""


def _batches(data: LoopData, config: StudentConfig, epoch: int, rank: int, world: int,
             gen: torch.Generator, local: LocalEnsemble | None = None) -> Iterator[Batch]:
    """(x, y, teacher logits (M, B, C) or None) for each step of one epoch.

    Online (augmentation): the in-process ``local`` ensemble when given, else
    ``data.teacher_actors`` (:mod:`raykd.train.online`).
    """
    augment = config.augment
    indices = epoch_batches(len(data.y_train), batch_size=config.train.batch_size,
                            seed=config.train.seed, epoch=epoch, rank=rank, world_size=world)
    if local is not None or data.teacher_actors:
        if local is not None:
            ask = ask_local(local)
        else:
            actors = data.teacher_actors or []
            ask = ask_actors([actors[rank % len(actors)]] if data.teacher_replicas else actors)
        yield from step_ahead(data.x_train, data.y_train, ask, indices, gen, augment)
        return
    cached: np.ndarray | torch.Tensor | TopK | None = data.teacher_train
    if isinstance(cached, np.ndarray):
        cached = torch.from_numpy(cached)  # zero-copy, once per epoch: steps gather by index
    for idx in indices:
        xb = torch.from_numpy(data.x_train[idx])
        if augment:
            xb = augment_images(xb, gen)
        yield xb, torch.from_numpy(data.y_train[idx]), teacher_batch(cached, idx)


def teacher_batch(cached: np.ndarray | torch.Tensor | TopK | None,
                  idx: np.ndarray) -> torch.Tensor | None:
    """The (M, B, C) float32 teacher logits of a batch from the dense or top-k cache."""
    if cached is None:
        return None
    if isinstance(cached, TopK):
        return torch.from_numpy(from_topk(cached, idx))
    if isinstance(cached, np.ndarray):
        cached = torch.from_numpy(cached)
    return cached.index_select(1, torch.from_numpy(idx)).float()


def check_loop_data(data: LoopData, num_classes: int) -> None:
    """The checks a training step does not repeat, once per run: labels and cached logits.

    Span windows (labels (N, 2) start/end positions): cached logits (M, N_train, 2, L) with
    L = ``num_classes``.

    Raises:
        DataError: on training labels outside [0, num_classes), cached teacher logits whose
            shape is not (M, N_train, num_classes) (spans: (M, N_train, 2, L)), or NaN/inf
            in them.
    """
    y = data.y_train
    if len(y) and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise DataError(f"training labels must be class indices in [0, {num_classes}), got "
                        f"min {int(y.min())}, max {int(y.max())}")
    cached = data.teacher_train
    if cached is None:
        return
    parts = (cached.values, cached.rest_lse) if isinstance(cached, TopK) else (cached,)
    shape = (len(parts[0]), len(y), *y.shape[1:], num_classes)
    dense_shape = cached.shape if not isinstance(cached, TopK) else None
    if dense_shape is not None and (len(dense_shape) != len(shape) or dense_shape[1:] != shape[1:]):
        raise DataError(f"cached teacher logits have shape {cached.shape}; expected "
                        f"(M, {', '.join(str(d) for d in shape[1:])}) for {len(y)} training rows")
    for m in range(shape[0]):
        if not all(np.isfinite(p[m]).all() for p in parts):
            raise DataError(f"cached logits of teacher {m} contain NaN/inf on the training split; "
                            "a finite teacher is required")


def build_student(config: StudentConfig) -> nn.Module:
    """The student model, fresh or warm-started from ``config.init_checkpoint``."""
    torch.manual_seed(config.train.seed)
    if config.init_checkpoint:
        return load_checkpoint(config.init_checkpoint, config=config.model,
                               input_shape=config.input_shape, num_classes=config.num_classes)
    return build_model(config.model, config.input_shape, config.num_classes)


def epoch_seed(seed: int, epoch: int, rank: int) -> int:
    """The seed of one rank's random draws (augmentation, dropout) in one epoch."""
    return int(np.random.SeedSequence([seed, epoch, rank]).generate_state(1)[0])


def run_student(config: StudentConfig, data: LoopData, *, report: Reporter, rank: int = 0,
                world: int = 1, wrap: Callable[[nn.Module], nn.Module] = lambda m: m,
                resume: str | Path | None = None,
                on_step: Callable[[int], None] | None = None) -> list[dict[str, Any]]:
    """Train one student; call ``report(metrics, state_or_None)`` once per epoch.

    ``config`` says what to train (:class:`~raykd.train.config.StudentConfig`). Rank 0 passes its
    :class:`~raykd.train.state.TrainState` (model, optimizer, progress, best weights) to
    ``report``; other ranks pass None. ``resume`` is a state directory
    (:mod:`raykd.train.state`) to continue from: the finished epochs are not run again.
    Returns the per-epoch metrics of the whole run (resumed epochs included).
    """
    epochs = student_epochs(config, data, rank=rank, world=world, wrap=wrap, resume=resume,
                            on_step=on_step)
    while True:
        try:
            metrics, state = next(epochs)
        except StopIteration as done:
            return list(done.value)
        report(metrics, state if rank == 0 else None)


def student_epochs(config: StudentConfig, data: LoopData, *, rank: int = 0, world: int = 1,
                   wrap: Callable[[nn.Module], nn.Module] = lambda m: m,
                   resume: str | Path | None = None,
                   on_step: Callable[[int], None] | None = None,
                   ) -> Generator[tuple[dict[str, Any], TrainState], None, list[dict[str, Any]]]:
    """:func:`run_student` as a generator: ``(metrics, state)`` after each epoch.

    ``on_step(step)`` (fault injection only, :func:`raykd.core.faults.step_hook`) is called
    before each optimizer step; None costs nothing in the loop.

    Each epoch's metrics include ``workers`` (the DDP world size) and ``rows_per_worker``
    (the training rows this rank stepped on: about ``N_train / workers``, the rows of whole
    global batches, :func:`~raykd.train.steps.epoch_batches`).

    The state is live (the next epoch changes it): save it before asking for the next one.
    A resumed run yields only the epochs it runs (none when ``resume`` finished them all);
    the generator's return value is the whole run's history (resumed epochs included).
    """
    set_threads(config.threads)
    check_loop_data(data, config.num_classes)
    local = None
    try:
        if data.teacher_local:  # the teachers in this process, on threads of their own
            student, teachers = split_threads(config.threads, node_cpus(), world)
            local = LocalEnsemble(data.teacher_local, config.input_shape, config.num_classes,
                                  threads=teachers)
            set_threads(student)
        return (yield from _epochs(config, data, rank=rank, world=world, wrap=wrap,
                                   resume=resume, on_step=on_step, local=local))
    finally:
        if local is not None:
            local.close()
        set_threads(config.threads)  # the process's next fit (the student actor's) gets them all


def _epochs(config: StudentConfig, data: LoopData, *, rank: int, world: int,
            wrap: Callable[[nn.Module], nn.Module], resume: str | Path | None,
            on_step: Callable[[int], None] | None, local: LocalEnsemble | None,
            ) -> Generator[tuple[dict[str, Any], TrainState], None, list[dict[str, Any]]]:
    """The body of :func:`student_epochs`, with its online server (if any) ready."""
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
    step = step_fn(model, opt, config.method, device, total,
                teacher_weights=loop_teacher_weights(config, data),
                plan=StepPlan(train, per_epoch), spans=config.spans)
    for epoch in range(state.progress.epoch, train.epochs):
        torch.manual_seed(epoch_seed(train.seed, epoch, rank))
        gen = torch.Generator().manual_seed(epoch_seed(train.seed + 1, epoch, rank))
        start = time.perf_counter()
        model.train()
        loss_sum = torch.zeros((), device=device)
        n_steps = n_rows = 0
        for xb, yb, tl in _batches(data, config, epoch, rank, world, gen, local):
            if on_step is not None:
                on_step(state.progress.step)
            loss_sum += step(xb, yb, tl, state.progress.step)
            n_steps += 1
            n_rows += len(yb)
            state.progress.step += 1
        seconds = time.perf_counter() - start
        metrics: dict[str, Any] = {
            "epoch": epoch + 1,
            "train_loss": float(loss_sum) / max(1, n_steps),
            "epoch_seconds": seconds,
            "samples_per_s": n_rows * world / seconds if seconds > 0 else 0.0,
            "workers": world,
            "rows_per_worker": n_rows,
        }
        if rank == 0:
            val_logits = predict_logits(inner, data.x_val, device=device)
            metrics |= val_metrics(config, val_logits, data)
            _track_best(state, metrics, key="val_f1" if config.spans else "val_accuracy")
        state.progress.epoch = epoch + 1
        state.progress.history.append(metrics)
        yield metrics, state
    return state.progress.history


def val_metrics(config: StudentConfig, val_logits: np.ndarray, data: LoopData) -> dict[str, float]:
    """One epoch's validation metrics: ``val_accuracy``; for span windows the share of windows
    whose start and end arg-max (over valid positions) are right, plus SQuAD v2.0 ``val_f1``
    and ``val_exact`` (percent; the no-answer threshold chosen on this same split)."""
    if not config.spans:
        return {"val_accuracy": accuracy(val_logits, data.y_val)}

    scores = squad_scores(val_logits, config.span_val)
    return {"val_accuracy": window_accuracy(val_logits, data.x_val, data.y_val),
            "val_f1": scores["f1"], "val_exact": scores["exact"]}


def _track_best(state: TrainState, metrics: dict[str, Any], key: str = "val_accuracy") -> None:
    """Keep a copy of the weights of the best-validation epoch (the first epoch counts):
    the highest ``key`` (``val_f1`` for span data, else ``val_accuracy``)."""
    val = metrics.get(key)
    if state.progress.improved(val):
        state.progress.best_val = None if val is None or math.isnan(val) else float(val)
        state.progress.best_epoch = metrics["epoch"]
        state.best_weights = {k: v.detach().clone() for k, v in state.model.state_dict().items()}


def loop_teacher_weights(config: StudentConfig, data: LoopData) -> torch.Tensor | None:
    """The per-teacher weights of ``method.teacher_weights`` (None for ``uniform``).

    ``val_accuracy``: :func:`raykd.losses.accuracy_weights` of ``config.teacher_accuracy``.

    Raises:
        DataError: without the teachers' validation accuracies (or with an empty validation
            split), or when their number differs from the cached logits' M.
    """
    method = config.method
    if method.method == "none" or method.teacher_weights == "uniform":
        return None
    acc = config.teacher_accuracy
    if not acc or any(math.isnan(a) for a in acc):
        raise DataError(f"teacher_weights: {method.teacher_weights} needs each teacher's accuracy "
                        f"on a non-empty validation split, got {acc}; set data.val_fraction > 0")
    cached = data.teacher_train
    m = None if cached is None else len(cached.values if isinstance(cached, TopK) else cached)
    if m is not None and m != len(acc):
        raise DataError(f"teacher_weights: {len(acc)} teacher accuracies for {m} teachers' logits")
    return accuracy_weights(acc, num_classes=config.num_classes)
