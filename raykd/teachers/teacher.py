"""One frozen teacher: a model that trains itself once, then serves logits.

``Teacher`` is a plain class; ``raykd.teachers.pool`` runs one per Ray actor (one GPU
each when there are GPUs). Keeping it Ray-free lets the benchmarks run the same code in a
single process.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from raykd.models import build_model, load_checkpoint, save_checkpoint, weights_hash
from raykd.train.steps import epoch_batches, make_optimizer, predict_logits, set_threads


class Teacher:
    """A teacher model with a forward-pass counter.

    Args:
        index: position in the ensemble (for messages).
        model: the architecture config (``ModelSpec.model_dump()``).
        input_shape: per-example input shape.
        num_classes: number of classes C.
        checkpoint: a .safetensors file to load, or None to build fresh weights.
        threads: torch intra-op threads for this process.
    """

    def __init__(self, index: int, model: dict[str, Any], input_shape: tuple[int, ...],
                 num_classes: int, checkpoint: str | None = None, threads: int = 1,
                 seed: int = 0) -> None:
        set_threads(threads)
        self.index = index
        self.config = dict(model)
        self.input_shape = tuple(input_shape)
        self.num_classes = num_classes
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        torch.manual_seed(seed)
        if checkpoint is not None:
            self.model = load_checkpoint(checkpoint, config=self.config, input_shape=self.input_shape,
                                         num_classes=num_classes)
        else:
            self.model = build_model(self.config, self.input_shape, num_classes)
        self.model.to(self.device).eval()
        self.forward_passes = 0
        self.forward_examples = 0

    def fit(self, x: np.ndarray, y: np.ndarray, *, epochs: int, batch_size: int, lr: float,
            weight_decay: float, seed: int, out: str) -> dict[str, Any]:
        """Train on (x, y) with cross-entropy, save to ``out``; returns timing and loss."""
        start = time.perf_counter()
        torch.manual_seed(seed)
        opt = make_optimizer(self.model, lr=lr, weight_decay=weight_decay)
        self.model.train()
        loss = torch.tensor(float("nan"))
        for epoch in range(epochs):
            for idx in epoch_batches(len(x), batch_size=batch_size, seed=seed, epoch=epoch):
                xb = torch.from_numpy(x[idx]).to(self.device)
                yb = torch.from_numpy(y[idx]).to(self.device)
                loss = F.cross_entropy(self.model(xb), yb)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            print(f"teacher {self.index}: epoch {epoch + 1}/{epochs} loss {loss.item():.4f}", flush=True)
        self.model.eval()
        self.save(out)
        return {"seconds": time.perf_counter() - start, "final_loss": float(loss.item())}

    def save(self, out: str) -> str:
        save_checkpoint(self.model, out, config=self.config, input_shape=self.input_shape,
                        num_classes=self.num_classes)
        return out

    def weights_hash(self) -> str:
        return weights_hash(self.model)

    def logits(self, x: np.ndarray) -> np.ndarray:
        """Logits (B, C) float32 for a batch (B, *input_shape)."""
        self.forward_passes += 1
        self.forward_examples += len(x)
        return predict_logits(self.model, x, device=self.device)

    def info(self) -> dict[str, Any]:
        """Where this teacher runs and how much it has computed."""
        try:
            import ray

            gpu_ids = [str(g) for g in ray.get_gpu_ids()] if ray.is_initialized() else []
        except Exception:  # noqa: BLE001 - outside Ray
            gpu_ids = []
        return {
            "index": self.index,
            "pid": os.getpid(),
            "device": str(self.device),
            "gpu_ids": gpu_ids,
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "forward_passes": self.forward_passes,
            "forward_examples": self.forward_examples,
        }


def checkpoint_name(directory: str | Path, index: int) -> str:
    return str(Path(directory) / f"teacher-{index}.safetensors")
