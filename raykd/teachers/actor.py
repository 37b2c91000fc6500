"""TeacherServer: the Ray actor around a Teacher; merges concurrent requests into one pass.

With augmentation on, every student worker asks every teacher for its batch's logits, a
step ahead. Requests that arrive together (``clients`` of them, one per worker, or
whatever has arrived ``max_wait_s`` after the first) are concatenated in arrival order
and served by a single forward pass, then split back in the same order, so a teacher's
cost per step does not grow with the number of workers' calls and every caller gets the
rows of its own input.

A taken batch is served in a task of its own, never in a caller's coroutine: a caller
that is cancelled cannot strand the others. If a merged pass fails (e.g. one request has
the wrong shape or dtype), each request of that batch is served alone, so an error
reaches only the caller whose input caused it.

Restarts: state set by calls (``set_clients``, ``share_node``, counters) lives in the
process and is lost when Ray restarts the actor; the constructor's arguments come back.
So the thread share is also given at construction (``share``): a restarted actor starts
with its pool's conservative share, never torch's default, until the pool re-applies
the exact one. A restarted actor serves each request alone until ``set_clients`` is
called again (correct, merely unmerged).
"""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np

from raykd.core.faults import fire_once
from raykd.teachers.teacher import Teacher, teacher_threads
from raykd.train.steps import node_cpus

Request = tuple[np.ndarray, "asyncio.Future[np.ndarray]"]


class TeacherServer:
    """Async actor: ``logits`` batches concurrent callers; other calls pass through."""

    def __init__(self, *args: Any, max_wait_s: float = 0.003, share: int | None = None,
                 fault: dict[str, Any] | None = None, **kwargs: Any) -> None:
        """Build the :class:`Teacher` from ``args``/``kwargs``.

        Args:
            max_wait_s: how long the first of a batch waits for the others.
            share: when given, :meth:`share_node` is applied with it at once (the pool
                passes its size: the fewest threads it can give, so a restarted actor
                never runs on torch's default threads).
            fault: fault injection (:func:`raykd.core.faults.teacher_fault`): the process dies
                on its n-th logits request, once per job.
        """
        self.teacher = Teacher(*args, **kwargs)
        if share is not None:
            self.share_node(share)
        self.max_wait_s = max_wait_s
        self.fault = fault
        self.clients = 1
        self.requests = 0
        self._queue: list[Request] = []
        self._timer: asyncio.TimerHandle | None = None
        self._lock: asyncio.Lock | None = None
        self._serving: set[asyncio.Task[None]] = set()

    def set_clients(self, n: int) -> None:
        """How many callers to wait for before a pass (the number of student workers)."""
        self.clients = max(1, int(n))

    def node_id(self) -> str | None:
        """The Ray node this actor runs on (None outside Ray)."""
        try:
            import ray

            return ray.get_runtime_context().get_node_id() if ray.is_initialized() else None
        except Exception:  # noqa: BLE001 - outside a Ray worker
            return None

    def share_node(self, teachers_on_node: int) -> int:
        """Size torch threads for ``teachers_on_node`` teachers sharing this node's CPUs.

        Rule: ``max(1, node_cpus() // teachers_on_node)``, where :func:`node_cpus` is this
        node's Ray ``CPU`` resource capped by the CPUs this process may run on. Returns the
        thread count now in use.
        """
        return self.teacher.use_threads(teacher_threads(node_cpus(), teachers_on_node))

    async def logits(self, x: np.ndarray) -> np.ndarray:
        """Logits (B, C) of ``x`` (B, ...), computed together with concurrent requests."""
        self.requests += 1
        if self.fault and self.requests == self.fault["kill_at_request"]:
            fire_once(self.fault.get("marker"))
        loop = asyncio.get_running_loop()
        future: asyncio.Future[np.ndarray] = loop.create_future()
        self._queue.append((x, future))
        if len(self._queue) >= self.clients:
            self._dispatch()
        elif self._timer is None:
            self._timer = loop.call_later(self.max_wait_s, self._dispatch)
        return await future

    def _dispatch(self) -> None:
        """Take every queued request as one batch (synchronously) and serve it in a task."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        batch, self._queue = self._queue, []
        if batch:
            task = asyncio.get_running_loop().create_task(self._serve(batch))
            self._serving.add(task)
            task.add_done_callback(self._serving.discard)

    async def _serve(self, batch: list[Request]) -> None:
        """One pass at a time; hand every request its own rows (or its own error)."""
        self._lock = self._lock or asyncio.Lock()
        async with self._lock:
            try:
                results = await asyncio.to_thread(self._forward, [x for x, _ in batch])
            except asyncio.CancelledError:  # the actor is going away: release every caller
                for _, fut in batch:
                    fut.cancel()
                raise
            except Exception as exc:  # noqa: BLE001 - never leave a caller waiting
                results = [exc] * len(batch)
        for (_, fut), res in zip(batch, results, strict=True):
            if fut.done():  # the caller was cancelled
                continue
            if isinstance(res, BaseException):
                fut.set_exception(res)
            else:
                fut.set_result(res)

    def _forward(self, xs: list[np.ndarray]) -> list[np.ndarray | BaseException]:
        """Rows of one merged pass split back per request; each alone if the merged pass fails."""
        if len(xs) > 1:
            try:
                out = self.teacher.logits(np.concatenate(xs))
                ends = np.cumsum([len(x) for x in xs])
                return list(np.split(out, ends[:-1]))
            except Exception:  # noqa: BLE001 - retried per request below
                pass
        results: list[np.ndarray | BaseException] = []
        for x in xs:
            try:
                results.append(self.teacher.logits(x))
            except Exception as exc:  # noqa: BLE001 - handed to its own caller
                results.append(exc)
        return results

    def fit(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        return self.teacher.fit(*args, **kwargs)

    def weights_hash(self) -> str:
        return self.teacher.weights_hash()

    def info(self) -> dict[str, Any]:
        return {**self.teacher.info(), "requests": self.requests, "node_id": self.node_id()}
