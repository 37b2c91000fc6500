"""TeacherPool: one Ray actor per teacher, reserved together, serving logits.

Placement: with GPUs every teacher gets its own bundle ``{"GPU": fraction}`` in one
placement group, so a pool is either wholly placed or not at all (no half-allocated
deadlock with the student workers); ``fraction == 1`` pins each teacher to its own GPU.
Without GPUs the actors reserve no CPU (``num_cpus=0``): they compute while the students
do not, and a 2-CPU machine would otherwise deadlock (RAY-NOTES).

Threads: each teacher runs ``max(1, node CPUs // teachers of this pool on that node)``
torch threads, where a node's CPUs are its Ray ``CPU`` resource capped by the CPUs the
actor's process may run on (``TeacherServer.share_node``); never the cluster's total.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import ray
from ray.util.placement_group import placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from raykd.errors import ResourceError
from raykd.losses.topk import TopK, in_form, stack
from raykd.teachers.cache import LogitCache, cache_key
from raykd.teachers.server import TeacherServer


@dataclass
class TeacherConfig:
    """What an actor needs to build one teacher."""

    model: dict[str, Any]
    checkpoint: str | None = None
    seed: int = 0
    trained_path: str | None = None  # where raykd saves it once trained (a restarted actor reloads it)


@dataclass
class SplitLogits:
    """Per-teacher logits of one split, with what it cost."""

    logits: np.ndarray | TopK  # (M, N, C), dense or top-k
    cache_hits: int = 0
    forward_examples: int = 0
    seconds: float = 0.0
    keys: list[str] = field(default_factory=list)


TeacherActor = ray.remote(TeacherServer)


class TeacherPool:
    """The ensemble as Ray actors."""

    def __init__(self, teachers: list[TeacherConfig], *, input_shape: tuple[int, ...],
                 num_classes: int, use_gpu: bool, gpu_fraction: float = 1.0,
                 ready_timeout_s: float = 120.0) -> None:
        self.configs = teachers
        self.pg = None
        m = len(teachers)
        options: list[dict[str, Any]] = [{"num_cpus": 0} for _ in teachers]
        if use_gpu:
            self.pg = self._reserve_gpus(m, gpu_fraction, ready_timeout_s)
            options = [
                {"num_cpus": 0, "num_gpus": gpu_fraction,
                 "scheduling_strategy": PlacementGroupSchedulingStrategy(self.pg, placement_group_bundle_index=i)}
                for i in range(m)
            ]
        self.actors = [
            TeacherActor.options(**opt).remote(i, t.model, input_shape, num_classes, t.checkpoint,
                                               1, t.seed)
            for i, (t, opt) in enumerate(zip(teachers, options, strict=True))
        ]
        try:
            self.threads = self._share_nodes(ready_timeout_s)
        except BaseException:
            self.shutdown()
            raise

    def _share_nodes(self, timeout_s: float) -> list[int]:
        """Size each teacher's threads by the pool's teachers on its node; waits for the actors.

        Returns each teacher's thread count (see the module docstring for the rule).
        """
        try:
            nodes = ray.get([a.node_id.remote() for a in self.actors], timeout=timeout_s)
        except ray.exceptions.GetTimeoutError as exc:
            raise ResourceError(
                f"{len(self.actors)} teacher actors did not start within {timeout_s:g}s; "
                "the cluster is too busy or too small for them"
            ) from exc
        per_node = Counter(nodes)
        return ray.get([a.share_node.remote(per_node[node])
                        for a, node in zip(self.actors, nodes, strict=True)])

    @staticmethod
    def _reserve_gpus(m: int, fraction: float, timeout_s: float):
        have = ray.cluster_resources().get("GPU", 0.0)
        if m * fraction > have + 1e-9:
            raise ResourceError(
                f"{m} teachers at scaling.teacher_gpu_fraction={fraction:g} need {m * fraction:g} GPUs, "
                f"the cluster has {have:g}; lower the fraction (e.g. {max(have, 1) / m:.2g}) or set use_gpu: false"
            )
        pg = placement_group([{"GPU": fraction} for _ in range(m)], strategy="PACK")
        if not pg.wait(timeout_seconds=timeout_s):
            remove_placement_group(pg)
            raise ResourceError(f"could not reserve {m} teacher GPU bundles within {timeout_s:g}s")
        return pg

    def fit_missing(self, x_ref: Any, y_ref: Any, *, epochs: int, batch_size: int, lr: float,
                    weight_decay: float, out_paths: list[str]) -> dict[int, dict[str, Any]]:
        """Train, in parallel, every teacher that came without a checkpoint."""
        pending = {
            i: actor.fit.remote(x_ref, y_ref, epochs=epochs, batch_size=batch_size, lr=lr,
                                weight_decay=weight_decay, seed=self.configs[i].seed, out=out_paths[i])
            for i, actor in enumerate(self.actors)
            if self.configs[i].checkpoint is None
        }
        done = dict(zip(pending, ray.get(list(pending.values())), strict=True))
        for i in pending:
            self.configs[i].checkpoint = out_paths[i]
        return done

    def weights_hashes(self) -> list[str]:
        return ray.get([a.weights_hash.remote() for a in self.actors])

    def split_logits(self, split_name: str, x_ref: Any, fingerprint: str, *, cache: LogitCache,
                     dtype: str = "float32", preprocessing: str = "none",
                     topk: int | None = None) -> SplitLogits:
        """Each teacher's logits over a split: from the cache, or computed in parallel once.

        With ``topk`` the entries are top-k (``raykd.losses.topk``) in the cache and in the
        result alike, so every consumer (students, sweep trials) sees the same targets.
        """
        start = time.perf_counter()
        keys = [
            cache_key(weights=h, fingerprint=fingerprint, split=split_name, preprocessing=preprocessing,
                      dtype=dtype, topk=topk)
            for h in self.weights_hashes()
        ]
        found = [cache.get(k) for k in keys]
        missing = [i for i, f in enumerate(found) if f is None]
        computed = ray.get([self.actors[i].logits.remote(x_ref) for i in missing])
        n_examples = 0
        for i, arr in zip(missing, computed, strict=True):
            n_examples += len(arr)
            entry = in_form(arr.astype(dtype, copy=False), topk)
            cache.put(keys[i], entry)
            found[i] = entry
        return SplitLogits(logits=stack(found), cache_hits=len(keys) - len(missing),  # type: ignore[arg-type]
                           forward_examples=n_examples, seconds=time.perf_counter() - start, keys=keys)

    def set_clients(self, n: int) -> None:
        """Each teacher waits for ``n`` concurrent requests (student workers) per forward pass."""
        ray.get([a.set_clients.remote(n) for a in self.actors])

    def infos(self) -> list[dict[str, Any]]:
        return ray.get([a.info.remote() for a in self.actors])

    def shutdown(self) -> None:
        for actor in self.actors:
            ray.kill(actor)
        self.actors = []
        if self.pg is not None:
            remove_placement_group(self.pg)
            self.pg = None
