"""One micro-batch of a student's training: the method's loss, gradient accumulation and
the learning-rate schedule (:class:`StepPlan`, :func:`step_fn`), used by
:func:`raykd.train.loop.student_epochs`."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from raykd.core.spec import MethodSpec, TrainSpec
from raykd.losses import LossFn, method_loss
from raykd.train.steps import lr_factor, set_lr


@dataclass(frozen=True)
class StepPlan:
    """Where each micro-batch falls among the optimizer steps (gradient accumulation and
    the learning-rate schedule of :class:`~raykd.core.spec.TrainSpec`).

    With ``k = grad_accum_steps`` and ``P`` micro-batches per epoch, micro-batch ``j`` of an
    epoch belongs to group ``j // k``; the group's optimizer step runs after its last
    micro-batch (``(j + 1) % k == 0`` or ``j == P - 1``: an epoch never carries gradients
    into the next, so a run resumed at an epoch boundary is exact). Each micro-batch's
    loss is divided by its group's size, so a group's gradient is the mean over its rows.
    """

    train: TrainSpec
    per_epoch: int

    @property
    def groups_per_epoch(self) -> int:
        return -(-self.per_epoch // self.train.grad_accum_steps)

    def where(self, index: int) -> tuple[int, int, bool]:
        """(optimizer step, group size, whether the step runs now) of micro-batch ``index``."""
        k, per = self.train.grad_accum_steps, max(1, self.per_epoch)
        epoch, j = divmod(index, per)
        group = j // k
        size = min(k, per - group * k)
        return epoch * self.groups_per_epoch + group, size, (j + 1) % k == 0 or j == per - 1

    def lr(self, opt_step: int) -> float:
        t = self.train
        return t.lr * lr_factor(opt_step, t.epochs * self.groups_per_epoch,
                                schedule=t.schedule, warmup_fraction=t.warmup_fraction)


def step_fn(model: nn.Module, opt: torch.optim.Optimizer, method: MethodSpec,
             device: torch.device, total: int,
             teacher_weights: torch.Tensor | None = None,
             plan: StepPlan | None = None, spans: bool = False) -> Callable[..., torch.Tensor]:
    """One micro-batch of the method's loss (an optimizer step at its group's end, at the
    schedule's rate: :class:`StepPlan`); returns the detached loss (no host sync).

    Span windows (``spans``): the loss gets ``mask = xb[:, 3].bool()[:, None, :]`` (the valid
    positions, broadcast over the start and end heads)."""
    loss_fn: LossFn = method_loss(method.method, temperature=method.temperature,
                                  alpha=method.alpha, incorrect_weight=method.incorrect_weight,
                                  teacher_weights=teacher_weights)
    last = max(1, total - 1)
    simple = plan is None or (plan.train.grad_accum_steps == 1 and plan.train.schedule == "constant")

    def step(xb: torch.Tensor, yb: torch.Tensor, tl: torch.Tensor | None,
             index: int) -> torch.Tensor:
        xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
        mask = {"mask": xb[:, 3].bool()[:, None, :]} if spans else {}
        if simple:
            out = model(xb)
            loss = loss_fn(out, None if tl is None else tl.to(device), yb, index / last, **mask)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            return loss.detach()
        assert plan is not None
        opt_step, size, now = plan.where(index)
        sync = contextlib.nullcontext() if now or not hasattr(model, "no_sync") else model.no_sync()
        with sync:
            out = model(xb)
            loss = loss_fn(out, None if tl is None else tl.to(device), yb, index / last, **mask)
            (loss / size).backward()
        if now:
            set_lr(opt, plan.lr(opt_step))
            opt.step()
            opt.zero_grad(set_to_none=True)
        return loss.detach()

    return step
