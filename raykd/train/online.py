"""Online serving (augmentation on): the teachers' logits of each step's own inputs.

With augmentation every batch is new, so nothing can be cached: each step needs the
ensemble's forward pass on that very batch. The loop asks for batch i+1's logits before
it trains on batch i, so the teachers and the student compute at the same time. Two
servers answer:

- **Teacher actors** (:class:`raykd.teachers.TeacherPool` on GPUs, one teacher per device;
  :class:`raykd.teachers.ensemble.EnsembleServer` for DDP workers on CPUs): the batch
  crosses to another process and the logits come back through Ray's object store.
- **In the student's process** (:class:`LocalEnsemble`: CPUs, one student worker): the
  teachers run in a background thread of the student's own process; the batch and the
  logits never leave it. The student's step and the ensemble's forward run at once, each
  on its own torch threads (:func:`split_threads`: the teachers get the CPUs an ensemble
  actor would, or half the worker's on a full node). On 2 cores a plain loop doing the
  same work one after the other (teachers, then the student, each on both cores) is the
  yardstick (``raykd bench speed`` rows (b), (d)).

Both hand the loop an :class:`Ask`: ``send(x)`` starts a request, ``receive(handle)``
returns its logits, which :func:`served` checks finite on the host.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from raykd.data.splits import DataError
from raykd.models import load_checkpoint
from raykd.train.steps import augment_images, predict_logits, set_threads


@dataclass
class InProcessTeachers:
    """The student stage's handle on teachers served in the student's process.

    It holds what the worker needs to load them (``configs``: ``{"model", "checkpoint"}``
    per teacher, the checkpoints the pool trained or was given); nothing runs until the
    worker builds its :class:`LocalEnsemble`. ``actors``, ``set_clients`` and
    ``shutdown`` as a pool has them: no actors, nothing to release.
    """

    configs: list[dict[str, Any]]
    actors: list[Any] = field(default_factory=list)
    replicas: bool = False

    def set_clients(self, n: int) -> None:
        """Nothing to share: the worker owns its teachers."""

    def shutdown(self) -> None:
        """Nothing to release: the teachers live and die with the student's process."""

    def infos(self) -> list[dict[str, Any]]:
        return []


def split_threads(worker_threads: int, node_cpus: int, workers: int = 1) -> tuple[int, int]:
    """Torch threads of (the student's steps, the teachers' forward) in one worker's process.

    The teachers get what an ensemble actor would (:func:`raykd.teachers.ensemble.ensemble_threads`):
    the node's CPUs that the ``workers`` student workers of ``worker_threads`` each leave,
    shared among them; the student keeps its own. On a node the students fill, the worker's
    threads are halved instead, one half each side (on 2 CPUs: one thread each).
    Torch's thread count is per thread once a thread has run torch, so each side keeps its
    own (:class:`LocalEnsemble` sets its thread's first).
    """
    worker_threads, workers = max(1, int(worker_threads)), max(1, int(workers))
    spare = int(node_cpus) - worker_threads * workers
    if spare >= workers:
        return worker_threads, spare // workers
    teachers = max(1, worker_threads // 2)
    return max(1, worker_threads - teachers), teachers


class LocalEnsemble:
    """Every teacher in this process; ``send`` runs their forward pass in a background thread.

    ``logits(x)`` is the (M, B, C) float32 stack of each teacher's logits, computed exactly
    as :meth:`raykd.teachers.Teacher.logits` computes them (the same checkpoint, the same
    eval-mode forward).
    """

    def __init__(self, configs: list[dict[str, Any]], input_shape: tuple[int, ...],
                 num_classes: int, threads: int) -> None:
        self.threads = max(1, int(threads))
        self.models = [load_checkpoint(c["checkpoint"], config=c["model"],
                                       input_shape=tuple(input_shape),
                                       num_classes=num_classes).eval()
                       for c in configs]
        self.requests = 0
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="raykd-teachers",
                                        initializer=set_threads, initargs=(self.threads,))
        self._pool.submit(int).result()  # the thread exists and has its count: set it first

    def logits(self, x: np.ndarray) -> np.ndarray:
        """(M, B, C) float32 logits of every teacher for one batch (B, *input_shape)."""
        self.requests += 1
        return np.stack([predict_logits(m, x) for m in self.models])

    def send(self, x: np.ndarray) -> Future[np.ndarray]:
        """Start the ensemble's forward pass on ``x`` in the background thread."""
        return self._pool.submit(self.logits, x)

    def close(self) -> None:
        """Stop the background thread (after the pass in flight, if any)."""
        self._pool.shutdown(wait=True, cancel_futures=True)


@dataclass
class Ask:
    """How the loop asks for a batch's logits: ``send(x)`` -> handle, ``receive(handle)``."""

    send: Callable[[np.ndarray], Any]
    receive: Callable[[Any], list[np.ndarray]]


def ask_actors(actors: list[Any]) -> Ask:
    """Ask Ray actors (one per teacher, or one ensemble) for their logits."""
    import ray

    return Ask(send=lambda x: [a.logits.remote(x) for a in actors], receive=ray.get)


def ask_local(ensemble: LocalEnsemble) -> Ask:
    """Ask the in-process ensemble."""
    return Ask(send=ensemble.send, receive=lambda f: [f.result()])


def served(parts: list[np.ndarray]) -> torch.Tensor:
    """The (M, B, C) logits served for one batch, checked on the host.

    ``parts``: one (B, C) array per teacher actor, or the one (M, B, C) stack of an
    ensemble (an actor's or the in-process one).
    """
    logits = parts[0] if len(parts) == 1 and parts[0].ndim == 3 else np.stack(parts)
    if not np.isfinite(logits).all():
        bad = [m for m in range(len(logits)) if not np.isfinite(logits[m]).all()]
        raise DataError(f"teachers {bad} served NaN/inf logits; a finite teacher is required")
    return torch.from_numpy(logits)


def step_ahead(x_train: np.ndarray, y_train: np.ndarray, ask: Ask, indices: Iterator[np.ndarray],
               gen: torch.Generator, augment: bool,
               ) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Ask for batch i+1's logits before yielding batch i (overlap).

    Measured on 2 cores with teacher actors (``raykd bench speed`` row d, 2026-12-01):
    asking a step ahead, 2,232 samples/s (median of 3 rounds); in lockstep (the ensemble
    on both cores while the student waits), 1,161 (one round): so the step ahead stays.
    """
    pending = None
    for idx in indices:
        xb = torch.from_numpy(x_train[idx])
        if augment:
            xb = augment_images(xb, gen)
        handle = ask.send(xb.numpy())
        if pending is not None:
            yield pending[0], pending[1], served(ask.receive(pending[2]))
        pending = (xb, torch.from_numpy(y_train[idx]), handle)
    if pending is not None:
        yield pending[0], pending[1], served(ask.receive(pending[2]))
