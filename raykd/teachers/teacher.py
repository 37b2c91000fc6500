"""One frozen teacher: a model that trains itself once, then serves logits.

``Teacher`` is a plain class; ``raykd.teachers.pool`` runs one per Ray actor (one GPU
each when there are GPUs). Keeping it Ray-free lets the benchmarks run the same code in a
single process. :func:`node_cpus` and :func:`teacher_threads` size an actor's torch
threads from the node it runs on (Ray is imported only when it is running).
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


def teacher_threads(cpus: int, teachers_on_node: int) -> int:
    """Torch threads per teacher: the node's CPUs split evenly among the teachers on it (>= 1)."""
    return max(1, int(cpus) // max(1, int(teachers_on_node)))


class Teacher:
    """A teacher model with a forward-pass counter.

    Args:
        index: position in the ensemble (for messages).
        model: the architecture config (``ModelSpec.model_dump()``).
        input_shape: per-example input shape.
        num_classes: number of classes C.
        checkpoint: a .safetensors file to load, or None to build fresh weights.
        threads: torch intra-op threads for this teacher's passes (see :meth:`use_threads`).
    """

    def __init__(self, index: int, model: dict[str, Any], input_shape: tuple[int, ...],
                 num_classes: int, checkpoint: str | None = None, threads: int = 1,
                 seed: int = 0) -> None:
        self.threads = max(1, int(threads))
        set_threads(self.threads)
        self.index = index
        self.config = dict(model)
        self.input_shape = tuple(input_shape)
        self.num_classes = num_classes
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        torch.manual_seed(seed)
        if checkpoint is not None:
            self.model = load_checkpoint(checkpoint, config=self.config,
                                         input_shape=self.input_shape, num_classes=num_classes)
        else:
            self.model = build_model(self.config, self.input_shape, num_classes)
        self.model.to(self.device).eval()
        self.forward_passes = 0
        self.forward_examples = 0

    def fit(self, x: np.ndarray, y: np.ndarray, *, epochs: int, batch_size: int, lr: float,
            weight_decay: float, seed: int, out: str) -> dict[str, Any]:
        """Train on (x, y) with cross-entropy, save to ``out``; returns timing and loss."""
        start = time.perf_counter()
        self._pin_threads()
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
            print(f"teacher {self.index}: epoch {epoch + 1}/{epochs} loss {loss.item():.4f}",
                  flush=True)
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
        self._pin_threads()
        self.forward_passes += 1
        self.forward_examples += len(x)
        return predict_logits(self.model, x, device=self.device)

    def use_threads(self, threads: int) -> int:
        """Run later passes on ``threads`` torch threads (>= 1); returns the count."""
        self.threads = max(1, int(threads))
        set_threads(self.threads)
        return self.threads

    def _pin_threads(self) -> None:
        """Apply ``self.threads`` in the calling thread (a server runs passes in worker threads)."""
        if torch.get_num_threads() != self.threads:
            set_threads(self.threads)

    def info(self) -> dict[str, Any]:
        """Where this teacher runs, on how many threads, and how much it has computed."""
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
            "threads": self.threads,
            "torch_threads": torch.get_num_threads(),
            "forward_passes": self.forward_passes,
            "forward_examples": self.forward_examples,
        }


def checkpoint_name(directory: str | Path, index: int) -> str:
    return str(Path(directory) / f"teacher-{index}.safetensors")
