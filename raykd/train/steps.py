"""Building blocks shared by every training loop (teachers, Ray Train students, benches).

No Ray here: these are plain torch/numpy functions, so the Ray Train worker loop, the
teacher actors and the plain-PyTorch baselines of ``raykd bench`` run the very same code.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator

import numpy as np
import torch
from torch import nn

# Arrays from Ray's object store are read-only views; raykd never writes to them.
warnings.filterwarnings("ignore", message="The given NumPy array is not writable")


def set_threads(threads: int) -> None:
    """Pin torch's intra-op threads so workers and teachers do not oversubscribe cores."""
    threads = max(1, int(threads))
    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set in this process
        pass


def make_optimizer(model: nn.Module, *, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """AdamW over all parameters."""
    return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)


def epoch_batches(
    n: int, *, batch_size: int, seed: int, epoch: int, rank: int = 0, world_size: int = 1
) -> Iterator[np.ndarray]:
    """Index batches of one epoch for one rank.

    One permutation per (seed, epoch), shared by all ranks; the global batch of
    ``batch_size`` is cut into ``world_size`` equal parts, so every rank runs the same
    number of steps (DDP needs that) and the union over ranks is the global batch.
    """
    perm = np.random.default_rng([seed, epoch]).permutation(n)
    local = max(1, batch_size // world_size)
    step = local * world_size
    for start in range(0, n - step + 1 if n >= step else 1, step):
        chunk = perm[start : start + step]
        part = chunk[rank * local : (rank + 1) * local]
        if len(part):
            yield np.sort(part)


def steps_per_epoch(n: int, *, batch_size: int, world_size: int = 1) -> int:
    """Number of batches ``epoch_batches`` yields per rank."""
    step = max(1, batch_size // world_size) * world_size
    return max(1, n // step)


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
    """Logits of ``model`` over all of ``x`` as a float32 (N, C) array (eval mode)."""
    was_training = model.training
    model.eval()
    out = []
    for start in range(0, len(x), batch_size):
        xb = torch.from_numpy(np.ascontiguousarray(x[start : start + batch_size])).to(device)
        out.append(model(xb).float().cpu())
    model.train(was_training)
    return torch.cat(out).numpy() if out else np.zeros((0, 0), np.float32)


def accuracy(logits: np.ndarray, y: np.ndarray) -> float:
    """Share of rows whose arg-max equals the label."""
    return float((logits.argmax(-1) == y).mean()) if len(y) else float("nan")
