"""TeacherServer: the Ray actor around a Teacher; merges concurrent requests into one pass.

With augmentation on, every student worker asks every teacher for its batch's logits, a
step ahead. Requests that arrive together (one per worker, or within ``max_wait_s``) are
concatenated and served by a single forward pass, then split back per request, so a
teacher's cost per step does not grow with the number of workers' calls.
"""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np

from raykd.teachers.teacher import Teacher


class TeacherServer:
    """Async actor: ``logits`` batches concurrent callers; other calls pass through."""

    def __init__(self, *args: Any, max_wait_s: float = 0.003, **kwargs: Any) -> None:
        self.teacher = Teacher(*args, **kwargs)
        self.max_wait_s = max_wait_s
        self.clients = 1
        self.requests = 0
        self._queue: list[tuple[np.ndarray, asyncio.Future[np.ndarray]]] = []
        self._timer: asyncio.Task[None] | None = None
        self._lock: asyncio.Lock | None = None

    def set_clients(self, n: int) -> None:
        """How many callers to wait for before a pass (the number of student workers)."""
        self.clients = max(1, int(n))

    async def logits(self, x: np.ndarray) -> np.ndarray:
        """Logits (B, C) of ``x`` (B, ...), computed together with concurrent requests."""
        self.requests += 1
        future: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()
        self._queue.append((x, future))
        if len(self._queue) >= self.clients:
            await self._flush()
        elif self._timer is None:
            self._timer = asyncio.create_task(self._flush_after_wait())
        return await future

    async def _flush_after_wait(self) -> None:
        await asyncio.sleep(self.max_wait_s)
        self._timer = None
        await self._flush()

    async def _flush(self) -> None:
        if self._timer is not None and self._timer is not asyncio.current_task():
            self._timer.cancel()
            self._timer = None
        batch, self._queue = self._queue, []
        if not batch:
            return
        self._lock = self._lock or asyncio.Lock()
        async with self._lock:
            x = batch[0][0] if len(batch) == 1 else np.concatenate([b[0] for b in batch])
            try:
                out = await asyncio.to_thread(self.teacher.logits, x)
            except Exception as exc:  # noqa: BLE001 - handed to every waiting caller
                for _, fut in batch:
                    fut.set_exception(exc)
                return
        start = 0
        for xb, fut in batch:
            fut.set_result(out[start : start + len(xb)])
            start += len(xb)

    def fit(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        return self.teacher.fit(*args, **kwargs)

    def weights_hash(self) -> str:
        return self.teacher.weights_hash()

    def info(self) -> dict[str, Any]:
        return {**self.teacher.info(), "requests": self.requests}
