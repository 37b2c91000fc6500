"""Building blocks shared by every training loop (teachers, Ray Train students, benches).

No Ray here: these are plain torch/numpy functions, so the Ray Train worker loop, the
teacher actors and the plain-PyTorch baselines of ``raykd bench`` run the very same code.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator

import numpy as np
import torch
from torch import nn

from raykd.data.splits import DataError

# Arrays from Ray's object store are read-only views; raykd never writes to them.
warnings.filterwarnings("ignore", message="The given NumPy array is not writable")


def set_threads(threads: int) -> None:
    """Pin torch's intra-op threads so workers and teachers do not oversubscribe cores.

    The count is the calling thread's once torch has read it there (read at once here): a
    thread that sets its own later (the in-process teachers', :mod:`raykd.train.online`)
    changes the default of threads yet to start, not this one's.
    """
    threads = max(1, int(threads))
    torch.set_num_threads(threads)
    torch.get_num_threads()
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set in this process
        pass


def node_cpus() -> int:
    """CPUs this process may use on its own node.

    The CPUs the OS lets this process run on (``os.sched_getaffinity``, else
    ``os.cpu_count``), capped, inside a Ray worker, by the ``CPU`` resource of the Ray node
    this process runs on (never by the whole cluster's total). At least 1.
    """
    if hasattr(os, "sched_getaffinity"):
        local = len(os.sched_getaffinity(0))
    else:  # pragma: no cover - macOS, Windows
        local = os.cpu_count() or 1
    ray_cpus = ray_node_cpus()
    return max(1, min(local, ray_cpus) if ray_cpus is not None else local)


def ray_node_cpus() -> int | None:
    """The ``CPU`` resource of the Ray node this process runs on; None outside Ray."""
    try:
        import ray
    except ImportError:  # pragma: no cover - Ray is a dependency
        return None
    if not ray.is_initialized():
        return None
    me = ray.get_runtime_context().get_node_id()
    for node in ray.nodes():
        if node.get("NodeID") == me:
            return int(node.get("Resources", {}).get("CPU", 0))
    return None


def make_optimizer(model: nn.Module, *, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """AdamW over all parameters."""
    return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)


def lr_factor(step: int, total: int, *, schedule: str = "constant",
              warmup_fraction: float = 0.0) -> float:
    """The learning rate's multiplier at optimizer step ``step`` (0-based) of ``total``.

    ``constant``: 1. ``linear``: with ``w = round(warmup_fraction * total)`` warm-up steps,
    ``(step + 1) / w`` while ``step < w``, then ``(total - step) / (total - w)``: a linear
    ramp to the full rate and a linear decay that reaches ``1 / (total - w)`` on the last
    step (never 0 on a step that runs). Stateless in ``step``, so a resumed run continues
    the same curve.
    """
    if schedule == "constant" or total <= 0:
        return 1.0
    warm = round(warmup_fraction * total)
    if step < warm:
        return (step + 1) / warm
    return max(0.0, (total - step) / max(1, total - warm))


def set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    """Set every parameter group's learning rate."""
    for group in opt.param_groups:
        group["lr"] = lr


def check_sharding(n: int, *, batch_size: int, world_size: int) -> None:
    """Reject a training split or batch that cannot give every DDP rank a non-empty, equal step.

    Every rank must run the same number of steps on the same number of rows (an uneven
    step blocks the others in DDP's all-reduce and skews its gradient average), so the
    split needs at least one row per worker (``n >= world_size``) and the global batch at
    least one row per worker (``batch_size >= world_size``).

    Raises:
        DataError: When ``n < world_size`` or ``batch_size < world_size``; the message names
            ``scaling.num_workers``, ``train.batch_size`` and the split size, and what would work.
    """
    if n < world_size:
        fix = f"use scaling.num_workers <= {n} or more training data" if n else "add training data"
        raise DataError(
            f"the training split has {n} rows, fewer than scaling.num_workers={world_size} "
            f"(train.batch_size={batch_size}): every student worker needs at least one row per "
            f"step; {fix}"
        )
    if batch_size < world_size:
        raise DataError(
            f"train.batch_size={batch_size} is smaller than scaling.num_workers={world_size} "
            f"(training split: {n} rows): the global batch is split evenly over the workers; use "
            f"train.batch_size >= {world_size} or scaling.num_workers <= {batch_size}"
        )


def local_batch_size(n: int, *, batch_size: int, world_size: int = 1) -> int:
    """Rows per rank per step: the global batch, capped by the split, over the ranks, rounded down.

    The global batch is ``min(batch_size, n)`` cut into ``world_size`` equal parts; what does
    not divide evenly is left out of the step, so every rank gets the same number of rows.

    Raises:
        DataError: From :func:`check_sharding` when a rank would get no row.
    """
    check_sharding(n, batch_size=batch_size, world_size=world_size)
    return min(batch_size, n) // world_size


def steps_per_epoch(n: int, *, batch_size: int, world_size: int = 1) -> int:
    """Number of batches ``epoch_batches`` yields per rank: whole global batches in ``n`` rows.

    Raises:
        DataError: From :func:`check_sharding` when a rank would get no row.
    """
    return n // (local_batch_size(n, batch_size=batch_size, world_size=world_size) * world_size)


def epoch_batches(
    n: int, *, batch_size: int, seed: int, epoch: int, rank: int = 0, world_size: int = 1
) -> Iterator[np.ndarray]:
    """Index batches of one epoch for one rank (indices sorted within a batch).

    One permutation per (seed, epoch), shared by all ranks, is cut into
    :func:`steps_per_epoch` global batches of ``local_batch_size * world_size`` rows; rank
    ``r`` takes the ``r``-th equal part of each. So every rank runs the same number of
    steps on the same number of rows (DDP needs both), the ranks' parts are disjoint, and
    the rows that do not fill a whole global batch (fewer than one) are left out of this
    epoch, on all ranks alike; the next epoch's permutation leaves out others.

    Raises:
        DataError: From :func:`check_sharding` when a rank would get no row.
    """
    local = local_batch_size(n, batch_size=batch_size, world_size=world_size)  # raises eagerly
    if not 0 <= rank < world_size:
        raise ValueError(f"rank={rank} is outside [0, world_size={world_size})")
    perm = np.random.default_rng([seed, epoch]).permutation(n)
    return _rank_batches(perm, local, rank, world_size)


def _rank_batches(perm: np.ndarray, local: int, rank: int, world_size: int) -> Iterator[np.ndarray]:
    """Rank ``rank``'s ``local`` rows of each whole global batch of ``perm``, sorted."""
    step = local * world_size
    for start in range(0, len(perm) // step * step, step):
        yield np.sort(perm[start + rank * local : start + (rank + 1) * local])


def augment_images(x: torch.Tensor, generator: torch.Generator, *, shift: int | None = None,
                   noise: float = 0.1) -> torch.Tensor:
    """Random integer shifts of up to ``shift`` pixels (zero fill) plus Gaussian noise.

    x: (B, C, H, W) images; tabular (B, D) inputs only get the noise. ``shift`` defaults
    to one pixel per 14 of height (2 on MNIST's 28, 1 on digits' 8).
    """
    if x.dim() == 4 and shift is None:
        shift = max(1, round(x.shape[2] / 14))
    if x.dim() == 4 and shift:
        b, _, h, w = x.shape
        padded = nn.functional.pad(x, (shift, shift, shift, shift))
        dy = torch.randint(0, 2 * shift + 1, (b,), generator=generator)
        dx = torch.randint(0, 2 * shift + 1, (b,), generator=generator)
        rows = (dy[:, None] + torch.arange(h)[None, :])[:, None, :, None]
        cols = (dx[:, None] + torch.arange(w)[None, :])[:, None, None, :]
        idx_b = torch.arange(b)[:, None, None, None]
        idx_c = torch.arange(x.shape[1])[None, :, None, None]
        x = padded[idx_b, idx_c, rows, cols]
    if noise > 0:
        x = x + noise * torch.randn(x.shape, generator=generator)
    return x


@torch.no_grad()
def predict_logits(model: nn.Module, x: np.ndarray, *, batch_size: int = 2048,
                   device: torch.device | str = "cpu") -> np.ndarray:
    """Logits of ``model`` over all of ``x`` as a float32 (N, C) array (eval mode).

    A model on text (an ``int`` attribute ``max_length``: tokens per example) is run in
    batches of at most ``TOKENS_PER_BATCH // max_length`` examples: batched by tokens, so
    a transformer's activations stay bounded whatever the sequence length.
    """
    batch_size = inference_batch(model, batch_size)
    was_training = model.training
    model.eval()
    out = []
    for start in range(0, len(x), batch_size):
        xb = torch.from_numpy(np.ascontiguousarray(x[start : start + batch_size])).to(device)
        out.append(model(xb).float().cpu())
    model.train(was_training)
    return torch.cat(out).numpy() if out else np.zeros((0, 0), np.float32)


TOKENS_PER_BATCH = 16384
"""Tokens per forward pass when a text model runs over a whole split."""


def inference_batch(model: nn.Module, batch_size: int) -> int:
    """``batch_size``, capped at ``TOKENS_PER_BATCH // model.max_length`` for a text model."""
    inner = getattr(model, "module", model)
    length = getattr(inner, "max_length", None)
    if isinstance(length, int) and length > 0:
        return max(1, min(batch_size, TOKENS_PER_BATCH // length))
    return batch_size


def accuracy(logits: np.ndarray, y: np.ndarray) -> float:
    """Share of rows whose arg-max equals the label."""
    return float((logits.argmax(-1) == y).mean()) if len(y) else float("nan")
