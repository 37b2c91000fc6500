"""TeacherPool: one Ray actor per teacher, reserved together, serving logits.

Placement: with GPUs every teacher gets its own bundle ``{"GPU": fraction}`` in one
placement group, so a pool is either wholly placed or not at all (no half-allocated
deadlock with the student workers); ``fraction == 1`` pins each teacher to its own GPU.
Without GPUs the actors reserve no CPU (``num_cpus=0``): they compute while the students
do not, and a 2-CPU machine would otherwise deadlock (RAY-NOTES). On a cluster they are
dealt round-robin over the alive nodes that have CPUs (head first), pinned there by node
affinity, so the ensemble's forward passes use every node's cores instead of crowding
one. Measured on a two-node cluster (Ray 2.60): ``SPREAD`` and *soft* affinity both put a
zero-CPU actor on the other node whenever its target's CPUs were all in use (both teachers
on one node); hard affinity keeps it. The price: a teacher whose node is lost is not
restarted elsewhere, its calls fail with Ray's error naming the dead node and the job
fails (in bounded time; with cached logits teachers live only through the teacher stage).

Threads: each teacher runs ``max(1, node CPUs // teachers of this pool on that node)``
torch threads, where a node's CPUs are its Ray ``CPU`` resource capped by the CPUs the
actor's process may run on (``TeacherServer.share_node``); never the cluster's total.

Restarts: Ray restarts a teacher whose process dies (``MAX_RESTARTS``) and retries the
calls it had in flight (``MAX_TASK_RETRIES``; ``logits`` is a pure function of the
weights, and ``fit`` is deterministic and idempotent, see ``Teacher.fit``). A restarted
actor re-runs its constructor: it loads its ``trained_path`` once trained (so a teacher
raykd trained comes back trained, never with fresh weights), and it starts on the
threads of all the pool's teachers sharing its node (exact on one node, fewer
otherwise); ``fit_missing`` and ``split_logits`` re-apply the exact share first.

Release: a pool whose start or ``fit_missing`` fails shuts itself down before the error
propagates (cancellation included); otherwise the owner calls :meth:`TeacherPool.shutdown`
(idempotent) or uses the pool as a context manager.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import numpy as np
import ray
from ray.util.placement_group import placement_group, remove_placement_group
from ray.util.scheduling_strategies import (
    NodeAffinitySchedulingStrategy,
    PlacementGroupSchedulingStrategy,
)

from raykd.core.errors import ResourceError
from raykd.losses.topk import TopK, in_form, stack
from raykd.models.user import model_identity
from raykd.teachers.actor import TeacherServer
from raykd.teachers.cache import SPAN_DTYPE, LogitCache, cache_key, dense_spans
from raykd.teachers.span_cache import PackedSpans, pack


@dataclass
class TeacherConfig:
    """What an actor needs to build one teacher."""

    model: dict[str, Any]
    checkpoint: str | None = None
    seed: int = 0
    trained_path: str | None = None  # where raykd saves it once trained; a restart reloads it
    fault: dict[str, Any] | None = None  # the spec's fault for this teacher (raykd.core.faults)


@dataclass
class SplitLogits:
    """Per-teacher logits of one split, with what it cost."""

    logits: np.ndarray | TopK  # (M, N, C), dense or top-k
    cache_hits: int = 0
    forward_examples: int = 0
    seconds: float = 0.0
    keys: list[str] = field(default_factory=list)
    stored_bytes: int = 0  # bytes of the split's entries as stored (span entries: unpadded)


def stored_bytes(entry: np.ndarray | TopK | PackedSpans) -> int:
    """Bytes of a cache entry's arrays."""
    if isinstance(entry, PackedSpans):
        return entry.nbytes
    if isinstance(entry, TopK):
        return int(entry.values.nbytes + entry.indices.nbytes + entry.rest_lse.nbytes)
    return int(entry.nbytes)


def cpu_nodes() -> list[str]:
    """Ids of the alive nodes with CPUs, the head's first (then by id: the same order for every
    pool of a job)."""
    alive = [n for n in ray.nodes() if n.get("Alive") and n.get("Resources", {}).get("CPU", 0) > 0]
    alive.sort(key=lambda n: (not n.get("Resources", {}).get("node:__internal_head__"), n["NodeID"]))
    return [n["NodeID"] for n in alive]


TeacherActor = ray.remote(TeacherServer)
MAX_RESTARTS = 3  # times Ray restarts a teacher whose process died
MAX_TASK_RETRIES = 3  # times Ray resubmits a call that a teacher's death interrupted


class TeacherPool:
    """The ensemble as Ray actors (see the module docstring for placement, restarts, release)."""

    def __init__(self, teachers: list[TeacherConfig], *, input_shape: tuple[int, ...],
                 num_classes: int, use_gpu: bool, gpu_fraction: float = 1.0,
                 ready_timeout_s: float = 120.0) -> None:
        self.configs = teachers
        self.ready_timeout_s = ready_timeout_s
        self.pg: Any = None
        self.actors: list[Any] = []
        self.threads: list[int] = []
        try:
            if use_gpu:
                self.pg = self._reserve_gpus(len(teachers), gpu_fraction, ready_timeout_s)
            gpus = gpu_fraction if use_gpu else 0.0
            self.actors = [self._start(i, t, input_shape, num_classes, gpus)
                           for i, t in enumerate(teachers)]
            self.threads = self._share_nodes(ready_timeout_s)
        except BaseException:
            self.shutdown()
            raise

    def _start(self, i: int, t: TeacherConfig, input_shape: tuple[int, ...], num_classes: int,
               gpus: float) -> Any:
        """Create teacher ``i``'s actor: bundle ``i`` of the GPU group if any, else no CPU
        reserved, on CPU node ``i mod nodes``."""
        options: dict[str, Any] = {"num_cpus": 0, "max_restarts": MAX_RESTARTS,
                                   "max_task_retries": MAX_TASK_RETRIES}
        if self.pg is not None:
            options |= {"num_gpus": gpus, "scheduling_strategy": PlacementGroupSchedulingStrategy(
                self.pg, placement_group_bundle_index=i)}
        elif len(nodes := cpu_nodes()) > 1:
            options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(nodes[i % len(nodes)], soft=False)
        return TeacherActor.options(**options).remote(
            i, t.model, input_shape, num_classes, t.checkpoint, 1, t.seed,
            trained_path=t.trained_path, share=len(self.configs), fault=t.fault)

    def __enter__(self) -> TeacherPool:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.shutdown()

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
    def _reserve_gpus(m: int, fraction: float, timeout_s: float) -> Any:
        """One placement group of ``m`` bundles ``{"GPU": fraction}``, ready; or ResourceError."""
        have = ray.cluster_resources().get("GPU", 0.0)
        if m * fraction > have + 1e-9:
            raise ResourceError(
                f"{m} teachers at scaling.teacher_gpu_fraction={fraction:g} need "
                f"{m * fraction:g} GPUs, the cluster has {have:g}; lower the fraction "
                f"(e.g. {max(have, 1) / m:.2g}) or set use_gpu: false"
            )
        pg = placement_group([{"GPU": fraction} for _ in range(m)], strategy="PACK")
        try:
            if not pg.wait(timeout_seconds=timeout_s):
                raise ResourceError(
                    f"could not reserve {m} teacher GPU bundles within {timeout_s:g}s")
        except BaseException:  # timed out, failed or interrupted: the group is not kept
            remove_placement_group(pg)
            raise
        return pg

    def fit_missing(self, x_ref: Any, y_ref: Any, *, epochs: int, batch_size: int, lr: float,
                    weight_decay: float, out_paths: list[str | None] | None = None,
                    schedule: str = "constant", warmup_fraction: float = 0.0,
                    ) -> dict[int, dict[str, Any]]:
        """Train, in parallel, every teacher that came without a checkpoint.

        Each is saved to its ``trained_path`` (``out_paths[i]``, when given, must be that
        same path: only there does a restarted actor find its trained weights). A fit that
        a restart interrupts is retried by Ray and yields the same weights. Any failure
        (or cancellation) shuts the pool down before it propagates.

        Returns each trained teacher's index mapped to its fit result.
        """
        try:
            todo = {i: self._out_path(i, out_paths) for i, c in enumerate(self.configs)
                    if c.checkpoint is None}
            self.threads = self._share_nodes(self.ready_timeout_s)
            pending = {
                i: self.actors[i].fit.remote(
                    x_ref, y_ref, epochs=epochs, batch_size=batch_size, lr=lr,
                    weight_decay=weight_decay, seed=self.configs[i].seed, out=out,
                    schedule=schedule, warmup_fraction=warmup_fraction)
                for i, out in todo.items()
            }
            done = dict(zip(pending, ray.get(list(pending.values())), strict=True))
        except BaseException:
            self.shutdown()
            raise
        for i, out in todo.items():
            self.configs[i].checkpoint = out
        return done

    def _out_path(self, i: int, out_paths: list[str | None] | None) -> str:
        """Where teacher ``i`` is saved once trained: its ``trained_path``; else ValueError."""
        trained = self.configs[i].trained_path
        out = out_paths[i] if out_paths is not None else trained
        if trained is None or out != trained:
            raise ValueError(
                f"teacher {i} is trained by raykd but its out path {out!r} is not its trained_path "
                f"{trained!r}; a restarted actor reloads only trained_path"
            )
        return trained

    def weights_hashes(self) -> list[str]:
        return ray.get([a.weights_hash.remote() for a in self.actors])

    def split_logits(self, split_name: str, x_ref: Any, fingerprint: str, *, cache: LogitCache,
                     dtype: str = "float32", preprocessing: str = "none",
                     topk: int | None = None, spans: bool = False) -> SplitLogits:
        """Each teacher's logits over a split: from the cache, or computed in parallel once.

        With ``topk`` the entries are top-k (``raykd.losses.topk``) in the cache and in the
        result alike, so every consumer (students, sweep trials) sees the same targets.
        Span windows (``spans``; x int64 (N, 4, L), row 3 the valid mask): stored unpadded
        (valid positions only, float16: :mod:`raykd.teachers.span_cache`), returned dense
        (M, N, 2, L) float32.
        """
        if spans:
            dtype = SPAN_DTYPE
        start = time.perf_counter()
        self.threads = self._share_nodes(self.ready_timeout_s)  # exact again after a restart
        keys = [
            cache_key(weights=h, model=model_identity(c.model), fingerprint=fingerprint,
                      split=split_name, preprocessing=preprocessing, dtype=dtype, topk=topk)
            for h, c in zip(self.weights_hashes(), self.configs, strict=True)
        ]
        found: list[Any] = [cache.get(k) for k in keys]
        missing = [i for i, f in enumerate(found) if f is None]
        computed = ray.get([self.actors[i].logits.remote(x_ref) for i in missing])
        n_examples = 0
        for i, arr in zip(missing, computed, strict=True):
            n_examples += len(arr)
            if spans:
                entry: Any = pack(arr, np.asarray(ray.get(x_ref)[:, 3], dtype=bool))
            else:
                entry = in_form(arr.astype(dtype, copy=False), topk)
            cache.put(keys[i], entry)
            found[i] = entry
        stored = sum(stored_bytes(f) for f in found)
        if spans:
            found = [dense_spans(f) for f in found]
        return SplitLogits(logits=stack(found),
                           cache_hits=len(keys) - len(missing), forward_examples=n_examples,
                           seconds=time.perf_counter() - start, keys=keys, stored_bytes=stored)

    def set_clients(self, n: int) -> None:
        """Each teacher waits for ``n`` concurrent requests (student workers) per forward pass."""
        ray.get([a.set_clients.remote(n) for a in self.actors])

    def infos(self) -> list[dict[str, Any]]:
        return ray.get([a.info.remote() for a in self.actors])

    def shutdown(self) -> None:
        """Kill every actor (no restart) and remove the GPU placement group; idempotent.

        Safe on a half-built pool and after Ray itself has shut down.
        """
        actors, self.actors = self.actors, []
        pg, self.pg = self.pg, None
        if not ray.is_initialized():
            return
        for actor in actors:
            try:
                ray.kill(actor, no_restart=True)
            except Exception:  # noqa: BLE001 - already gone: nothing to release
                pass
        if pg is not None:
            remove_placement_group(pg)
