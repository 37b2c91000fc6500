"""What the Ray cluster has (CPUs, GPUs: in all and on its largest node), cached.

The submission route asks :meth:`ClusterView.get`; Ray is asked at most once per
``ttl_s`` (one caller at a time, with a short timeout; the others use the last view), so
a request never waits on Ray for long (an unknown view is asked for again after
``RETRY_S``). When Ray does not answer, the view is None and the job is accepted: the
scheduler decides when Ray is back.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

import httpx

TIMEOUT_S = 2.0
RETRY_S = 1.0  # an unknown view (Ray away, or no node registered yet) is asked for again sooner


@dataclass(frozen=True)
class Capacity:
    """The alive nodes' logical resources: totals and the largest single node's."""

    cpus: float
    gpus: float
    node_cpus: float
    node_gpus: float
    nodes: int


class ClusterView:
    """A cached view of the cluster's resources from Ray's state API (``/api/v0/nodes``)."""

    def __init__(self, address: str, headers: dict[str, str] | None, ttl_s: float) -> None:
        self.address, self.headers, self.ttl_s = address.rstrip("/"), headers or {}, ttl_s
        self._value: Capacity | None = None
        self._at = float("-inf")
        self._lock = threading.Lock()

    def stale(self) -> bool:
        """Whether :meth:`get` would ask Ray now (a caller on the event loop asks it in a
        worker thread first: the request to Ray blocks up to ``TIMEOUT_S``)."""
        return time.monotonic() - self._at > (self.ttl_s if self._value is not None else RETRY_S)

    def get(self) -> Capacity | None:
        """The cluster's resources as last seen (refreshed when older than ``ttl_s``), or None."""
        if self.stale() and self._lock.acquire(blocking=False):
            try:
                self._value, self._at = self._fetch(), time.monotonic()
            finally:
                self._lock.release()
        return self._value

    def _fetch(self) -> Capacity | None:
        try:
            r = httpx.get(f"{self.address}/api/v0/nodes", params={"limit": 10_000, "detail": "true"},
                          headers=self.headers, timeout=TIMEOUT_S)
            r.raise_for_status()
            return capacity_of(_node_list(r.json()))
        except (httpx.HTTPError, ValueError, TypeError, KeyError):
            return None  # Ray away or answering something else: accept, the scheduler decides


def _node_list(body: Any) -> list[dict[str, Any]]:
    """The nodes in a state API answer (``{"data": {"result": {"result": [...]}}}``)."""
    found = body["data"]["result"]
    nodes = found["result"] if isinstance(found, dict) else found
    if not isinstance(nodes, list):
        raise TypeError("no node list")
    return nodes


def capacity_of(nodes: list[dict[str, Any]]) -> Capacity | None:
    """Totals and per-node maxima over the ALIVE nodes (None when there are none)."""
    alive = [n.get("resources_total") or {} for n in nodes if n.get("state") == "ALIVE"]
    if not alive:
        return None
    cpus = [float(r.get("CPU", 0)) for r in alive]
    gpus = [float(r.get("GPU", 0)) for r in alive]
    return Capacity(cpus=sum(cpus), gpus=sum(gpus), node_cpus=max(cpus), node_gpus=max(gpus),
                    nodes=len(alive))
