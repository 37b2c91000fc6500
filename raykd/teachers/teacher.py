"""One frozen teacher: a model that trains itself once, then serves logits.

``Teacher`` is a plain class; ``raykd.teachers.pool`` runs one per Ray actor (one GPU
each when there are GPUs). Keeping it Ray-free lets the benchmarks run the same code in a
single process. :func:`node_cpus` and :func:`teacher_threads` size an actor's torch
threads from the node it runs on (Ray is imported only when it is running).

Restarts: a teacher built without a ``checkpoint`` loads its ``trained_path`` when that
file holds a loadable checkpoint, so an actor that Ray restarts after :meth:`Teacher.fit`
serves the trained weights, not fresh ones. ``fit`` records what it trained on in the
checkpoint's metadata; a repeated ``fit`` with the same arguments on weights loaded from
that record returns the record instead of training them twice (Ray retries a ``fit``
that a restart interrupted).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from raykd.losses.kd import supervised_unchecked
from raykd.models import (
    CheckpointError,
    build_model,
    load_checkpoint,
    save_checkpoint,
    weights_hash,
)
from raykd.train.steps import (
    epoch_batches,
    lr_factor,
    make_optimizer,
    predict_logits,
    set_lr,
    set_threads,
    steps_per_epoch,
)


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
        seed: seeds the fresh weights (the same seed builds the same weights).
        trained_path: where raykd saves this teacher once trained. With ``checkpoint`` None
            and a loadable checkpoint there, that is loaded instead of fresh weights (an
            actor restarted after training, or a resumed job); an unreadable or mismatching
            file is ignored with a warning and fresh weights are built.
    """

    def __init__(self, index: int, model: dict[str, Any], input_shape: tuple[int, ...],
                 num_classes: int, checkpoint: str | None = None, threads: int = 1,
                 seed: int = 0, trained_path: str | None = None) -> None:
        self.threads = max(1, int(threads))
        set_threads(self.threads)
        self.index = index
        self.config = dict(model)
        self.input_shape = tuple(input_shape)
        self.num_classes = num_classes
        self.seed = seed
        self.trained_path = trained_path
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.fit_record: dict[str, Any] | None = None  # set while the weights are trained_path's
        if checkpoint is not None:
            self.model = load_checkpoint(checkpoint, config=self.config,
                                         input_shape=self.input_shape, num_classes=num_classes)
            self.source = "checkpoint"
        elif self._load_trained():
            self.source = "trained_path"
        else:
            self.model = self._fresh_model()
            self.source = "fresh"
        self.model.to(self.device).eval()
        self.forward_passes = 0
        self.forward_examples = 0

    def _fresh_model(self) -> torch.nn.Module:
        """Weights from ``self.seed``: the same seed always builds the same model."""
        torch.manual_seed(self.seed)
        return build_model(self.config, self.input_shape, self.num_classes)

    def _load_trained(self) -> bool:
        """Load ``trained_path`` when it holds a checkpoint of this teacher; True when loaded."""
        path = self.trained_path
        if path is None or not Path(path).is_file():
            return False
        try:
            self.model = load_checkpoint(path, config=self.config, input_shape=self.input_shape,
                                         num_classes=self.num_classes)
        except CheckpointError as err:
            print(f"teacher {self.index}: ignoring trained_path ({err}); building fresh weights",
                  flush=True)
            return False
        self.fit_record = read_fit_record(path)
        return True

    def fit(self, x: np.ndarray, y: np.ndarray, *, epochs: int, batch_size: int, lr: float,
            weight_decay: float, seed: int, out: str, schedule: str = "constant",
            warmup_fraction: float = 0.0) -> dict[str, Any]:
        """Train on (x, y) with cross-entropy, save to ``out``; returns timing and loss.

        Rule: when the weights were loaded from ``out`` (this teacher's ``trained_path``)
        and its record shows this same fit (arguments and data), that fit's result is
        returned with ``"reused": True`` and nothing is trained; weights loaded from a
        record of another fit are rebuilt fresh first. So a fit that Ray retries after a
        restart yields what the interrupted fit would have. ``out`` is complete (renamed
        into place) when this returns.
        """
        params = {"epochs": epochs, "batch_size": batch_size, "lr": lr,
                  "weight_decay": weight_decay, "seed": seed, "data": data_digest(x, y)}
        if schedule != "constant":  # records of constant-rate fits stay as they were
            params |= {"schedule": schedule, "warmup_fraction": warmup_fraction}
        if self.source == "trained_path" and out == self.trained_path:
            if self.fit_record is not None and self.fit_record.get("params") == params:
                return {**self.fit_record["result"], "reused": True}
            self.model = self._fresh_model().to(self.device)
        result = self._train(x, y, params)
        self.save(out, extra={"fit": {"params": params, "result": result}})
        if out == self.trained_path:  # now exactly what a restarted actor would load
            self.source, self.fit_record = "trained_path", {"params": params, "result": result}
        return result

    def _train(self, x: np.ndarray, y: np.ndarray, params: dict[str, Any]) -> dict[str, Any]:
        """The training loop (AdamW, cross-entropy, seeded batches); leaves the model in eval."""
        start = time.perf_counter()
        self._pin_threads()
        seed, epochs, batch = params["seed"], params["epochs"], params["batch_size"]
        torch.manual_seed(seed)
        opt = make_optimizer(self.model, lr=params["lr"], weight_decay=params["weight_decay"])
        self.model.train()
        loss = torch.tensor(float("nan"))
        total = epochs * steps_per_epoch(len(x), batch_size=batch)
        step = 0
        for epoch in range(epochs):
            for idx in epoch_batches(len(x), batch_size=batch, seed=seed, epoch=epoch):
                set_lr(opt, params["lr"] * lr_factor(
                    step, total, schedule=params.get("schedule", "constant"),
                    warmup_fraction=params.get("warmup_fraction", 0.0)))
                step += 1
                xb = torch.from_numpy(x[idx]).to(self.device)
                yb = torch.from_numpy(y[idx]).to(self.device)
                loss = train_loss(self.model(xb), xb, yb)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            print(f"teacher {self.index}: epoch {epoch + 1}/{epochs} loss {loss.item():.4f}",
                  flush=True)
        self.model.eval()
        return {"seconds": time.perf_counter() - start, "final_loss": float(loss.item())}

    def save(self, out: str, extra: dict[str, Any] | None = None) -> str:
        """Write the weights to ``out`` atomically (complete when this returns)."""
        save_checkpoint(self.model, out, config=self.config, input_shape=self.input_shape,
                        num_classes=self.num_classes, extra=extra)
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
            "weights_from": self.source,
            "torch_threads": torch.get_num_threads(),
            "forward_passes": self.forward_passes,
            "forward_examples": self.forward_examples,
        }


def train_loss(out: torch.Tensor, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
    """A teacher's supervised loss: cross-entropy; for span windows (x int64 (B, 4, L),
    labels (B, 2)) the mean over both heads of the cross-entropy over the valid positions
    (``xb[:, 3]``: context tokens and the no-answer position)."""
    if yb.ndim == 2 and xb.dtype == torch.int64:
        return supervised_unchecked(out, yb, mask=xb[:, 3].bool()[:, None, :])
    return F.cross_entropy(out, yb)


def checkpoint_name(directory: str | Path, index: int) -> str:
    return str(Path(directory) / f"teacher-{index}.safetensors")


def data_digest(x: np.ndarray, y: np.ndarray) -> str:
    """Identity of a training set: shapes, dtypes and a BLAKE2b digest of the bytes."""
    h = hashlib.blake2b(digest_size=16)
    for a in (x, y):
        a = np.ascontiguousarray(a)
        h.update(f"{a.shape}{a.dtype.str}".encode())
        h.update(memoryview(a).cast("B"))
    return h.hexdigest()


def read_fit_record(path: str | Path) -> dict[str, Any] | None:
    """The ``fit`` record a checkpoint's metadata holds (see :meth:`Teacher.fit`); None if none."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            extra = json.loads((f.metadata() or {}).get("extra", "{}"))
    except Exception:  # noqa: BLE001 - no readable record: the weights are not reused
        return None
    record = extra.get("fit") if isinstance(extra, dict) else None
    return record if isinstance(record, dict) and isinstance(record.get("result"), dict) else None
