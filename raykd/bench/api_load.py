"""The load of ``raykd bench api``: the endpoints and the jobs' spec, the closed-loop clients
(aiohttp), one phase's latencies and CPU time, and the interleaved rounds on both servers."""

from __future__ import annotations

import asyncio
import json
import math
import os
import random
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["ENDPOINTS", "LABELS", "SERVERS", "SPEC", "LoadClient", "Request", "cpu_seconds",
           "insert_jobs", "measure", "percentile", "phase_stats", "requests_for", "run_phase",
           "same_answers"]

ENDPOINTS = ("get", "list", "post")
LABELS = {"get": "GET /api/v1/jobs/{id}", "list": "GET /api/v1/jobs?limit=50",
          "post": "POST /api/v1/jobs"}
SERVERS = ("raykd", "yardstick")
SPEC: dict[str, Any] = {
    "name": "bench-api",
    "data": {"dataset": "digits"},
    "teachers": [{"model": {"name": "mlp", "hidden": [8]}, "seed": 1}],
    "student": {"model": {"name": "mlp", "hidden": [8]}},
    "methods": [{"method": "kd"}],
}
"""A small valid spec; the jobs never run (the queue is paused)."""

Request = Callable[[Any, int], Awaitable[Any]]


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def phase_stats(latencies: list[float], seconds: float,
                cpu_s: float | None = None) -> dict[str, float]:
    """p50/p99/mean latency in ms and requests per second of one measured phase, and the
    server's CPU milliseconds per request (``cpu_s``: its CPU seconds in the phase)."""
    ms = [x * 1000 for x in latencies]
    out = {"p50_ms": percentile(ms, 50), "p99_ms": percentile(ms, 99),
           "mean_ms": statistics.fmean(ms), "rps": len(ms) / seconds, "requests": len(ms)}
    if cpu_s is not None:
        out["cpu_ms"] = cpu_s * 1000 / len(ms)
    return out


def cpu_seconds(pid: int) -> float | None:
    """CPU seconds (user + system) process ``pid`` has used, where /proc tells (Linux)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def run_phase(client: Any, request: Request, n: int,
                    clients: int) -> tuple[list[float], float]:
    """``n`` requests by ``clients`` concurrent workers; (latencies in s, wall seconds)."""
    latencies: list[float] = []
    counter = iter(range(n))

    async def worker() -> None:
        for i in counter:
            start = time.perf_counter()
            response = await request(client, i)
            latencies.append(time.perf_counter() - start)
            if response.status_code >= 400:
                raise RuntimeError(f"{response.method} {response.path}: "
                                   f"{response.status_code} {response.text[:300]}")

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(clients)))
    return latencies, time.perf_counter() - start


def requests_for(ids: list[str], seed: int = 0) -> dict[str, Request]:
    """The request of each endpoint (the i-th call of a phase)."""
    rng = random.Random(seed)
    body = {"spec": SPEC, "name": "bench-api", "labels": {"bench": "api"}}

    async def get(client: Any, i: int) -> Any:
        return await client.get(f"/api/v1/jobs/{rng.choice(ids)}")

    async def list_(client: Any, i: int) -> Any:
        return await client.get("/api/v1/jobs", params={"limit": 50})

    async def post(client: Any, i: int) -> Any:
        return await client.post("/api/v1/jobs", json=body)

    return {"get": get, "list": list_, "post": post}


async def insert_jobs(client: Any, n: int, clients: int) -> list[str]:
    """Submit ``n`` jobs; their ids."""
    ids: list[str] = []
    body = {"spec": SPEC, "name": "bench-api", "labels": {"bench": "seed"}}

    async def post(c: Any, i: int) -> Any:
        response = await c.post("/api/v1/jobs", json=body)
        if response.status_code < 400:
            ids.append(response.json()["id"])
        return response

    await run_phase(client, post, n, clients)
    return ids


@dataclass
class _Answer:
    """What a phase needs of a response (aiohttp's is only valid inside its context)."""

    status_code: int
    text: str
    method: str
    path: str

    def json(self) -> Any:
        return json.loads(self.text)


class LoadClient:
    """The load generator's HTTP client: aiohttp, whose per-request CPU cost is a fraction
    of httpx's (measured here: httpx alone kept one of the two cores busy at ~95 req/s, so
    the numbers were the generator's, not the server's)."""

    def __init__(self, session: Any) -> None:
        self.session = session

    async def _call(self, method: str, path: str, **kwargs: Any) -> _Answer:
        async with self.session.request(method, path, **kwargs) as response:
            return _Answer(response.status, await response.text(), method, path)

    async def get(self, path: str, params: dict[str, Any] | None = None) -> _Answer:
        return await self._call("GET", path, params=params)

    async def post(self, path: str, json: Any = None) -> _Answer:  # noqa: A002 - httpx's name
        return await self._call("POST", path, json=json)


async def same_answers(clients: dict[str, LoadClient], job_id: str) -> dict[str, bool]:
    """Whether the yardstick answers the reads with raykd's JSON (one job, the first page)."""
    out = {}
    for name, path, params in (("get", f"/api/v1/jobs/{job_id}", None),
                               ("list", "/api/v1/jobs", {"limit": 50})):
        answers = [await clients[s].get(path, params=params) for s in SERVERS]
        out[name] = all(a.status_code == 200 for a in answers) and \
            answers[0].json() == answers[1].json()
    return out


def _session(url: str, token: str, clients: int) -> Any:
    import aiohttp

    return aiohttp.ClientSession(url, headers={"Authorization": f"Bearer {token}"},
                                 connector=aiohttp.TCPConnector(limit=clients),
                                 timeout=aiohttp.ClientTimeout(total=120))


async def measure(urls: dict[str, str], token: str, *, jobs: int, clients: int, rounds: int,
                  requests: int, warmup: int, log: Callable[[str], None],
                  pids: dict[str, int] | None = None) -> dict[str, Any]:
    """Insert the jobs (through raykd), check the yardstick's answers, then the interleaved
    rounds: every endpoint on both servers, one after the other; raw per-phase stats."""
    async with _session(urls["raykd"], token, clients) as a, \
            _session(urls["yardstick"], token, clients) as b:
        client = {"raykd": LoadClient(a), "yardstick": LoadClient(b)}
        start = time.perf_counter()
        ids = await insert_jobs(client["raykd"], jobs, clients)
        inserted_s = time.perf_counter() - start
        log(f"inserted {len(ids)} jobs in {inserted_s:.1f} s")
        same = await same_answers(client, ids[0])
        if not all(same.values()):
            raise RuntimeError(f"the yardstick does not answer raykd's JSON: {same}")
        calls = requests_for(ids)
        phases: list[dict[str, Any]] = []
        for r in range(rounds):
            order = ENDPOINTS[r % 3:] + ENDPOINTS[:r % 3]
            for name in order:
                for server in SERVERS if r % 2 == 0 else SERVERS[::-1]:
                    await run_phase(client[server], calls[name], warmup, clients)
                    pid = (pids or {}).get(server)
                    cpu = cpu_seconds(pid) if pid else None
                    latencies, seconds = await run_phase(client[server], calls[name], requests,
                                                         clients)
                    after = cpu_seconds(pid) if pid else None
                    used = after - cpu if after is not None and cpu is not None else None
                    p = {"round": r + 1, "server": server, "endpoint": name,
                         **phase_stats(latencies, seconds, used)}
                    phases.append(p)
                    log(f"round {r + 1} {server} {LABELS[name]}: p50 {p['p50_ms']:.1f} ms, "
                        f"p99 {p['p99_ms']:.1f} ms, {p['rps']:.0f} req/s, "
                        f"{p.get('cpu_ms', float('nan')):.2f} CPU ms/request")
        first = (await client["raykd"].get(f"/api/v1/jobs/{ids[0]}")).json()
    return {"phases": phases, "inserted": len(ids), "insert_seconds": inserted_s,
            "first_job_state": first.get("state"), "same_json": same}
