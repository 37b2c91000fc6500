"""``raykd bench api``: latency and throughput of the REST API under concurrent clients.

A real server: ``create_app(Settings())`` under uvicorn (one process, access log off,
keep-alive long enough that no pooled connection is closed between phases) in a
subprocess on 127.0.0.1, with a temporary storage directory and SQLite file, the queue
paused (``RAYKD_PAUSED=1``: submitted jobs stay queued and never reach Ray) and a dummy
``RAYKD_RAY_ADDRESS`` (no Ray head is started). First ``--jobs`` jobs are inserted through
``POST /api/v1/jobs``; then ``--clients`` concurrent clients (one aiohttp session,
closed loop: each sends its next request when the last one answered) measure

- ``GET /api/v1/jobs/{id}`` (a random inserted job),
- ``GET /api/v1/jobs?limit=50`` (the first page),
- ``POST /api/v1/jobs`` (a new job each time: this also gives jobs accepted per second),

each after a warm-up, in interleaved rounds (the order rotates every round). The report
gives, per endpoint, the median over rounds of p50/p99/mean latency and requests per
second, with the spread (min-max) over rounds. The load generator runs on the same machine
as the server and takes part of its CPUs; the report says how many there are.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import platform
import random
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from raykd.bench import BenchOptionError

ENDPOINTS = ("get", "list", "post")
LABELS = {"get": "GET /api/v1/jobs/{id}", "list": "GET /api/v1/jobs?limit=50",
          "post": "POST /api/v1/jobs"}
READS = ("get", "list")
TARGET_P99_MS = 50.0
"""Target: p99 of the reads under this at 50 clients."""
SPEC: dict[str, Any] = {
    "name": "bench-api",
    "data": {"dataset": "digits"},
    "teachers": [{"model": {"name": "mlp", "hidden": [8]}, "seed": 1}],
    "student": {"model": {"name": "mlp", "hidden": [8]}},
    "methods": [{"method": "kd"}],
}
"""A small valid spec; the jobs never run (the queue is paused)."""
SERVER_CODE = (
    "import sys, uvicorn\n"
    "from raykd.service.app import create_app\n"
    "from raykd.service.settings import Settings\n"
    "uvicorn.run(create_app(Settings()), host='127.0.0.1', port=int(sys.argv[1]),\n"
    "            log_level='warning', access_log=False, timeout_keep_alive=300)\n"
)

Request = Callable[[Any, int], Awaitable[Any]]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def server_env(tmp: Path, token: str) -> dict[str, str]:
    """The environment of the bench server: temporary storage, paused queue, no Ray."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAYKD_")}
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    env.update({
        "RAYKD_TOKEN": token,
        "RAYKD_STORAGE": str(tmp / "storage"),
        "RAYKD_DATABASE_URL": f"sqlite:///{tmp / 'raykd.db'}",
        "RAYKD_PAUSED": "1",
        "RAYKD_RAY_ADDRESS": "http://127.0.0.1:9",
    })
    return env


def start_server(tmp: Path, token: str, *, timeout_s: float = 120) -> tuple[Any, str]:
    """Start the server subprocess; return it and its URL once ``/healthz`` answers."""
    import httpx

    port = free_port()
    with open(tmp / "server.log", "wb") as log:  # the child keeps its own descriptor
        proc = subprocess.Popen([sys.executable, "-c", SERVER_CODE, str(port)], cwd=tmp,
                                env=server_env(tmp, token), stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    stop_server(proc)
    tail = (tmp / "server.log").read_text(errors="replace")[-2000:]
    raise RuntimeError(f"the bench server did not come up (exit code {proc.returncode}):\n{tail}")


def stop_server(proc: Any) -> None:
    """Stop the server subprocess (SIGTERM, then SIGKILL)."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def phase_stats(latencies: list[float], seconds: float) -> dict[str, float]:
    """p50/p99/mean latency in ms and requests per second of one measured phase."""
    ms = [x * 1000 for x in latencies]
    return {"p50_ms": percentile(ms, 50), "p99_ms": percentile(ms, 99),
            "mean_ms": statistics.fmean(ms), "rps": len(ms) / seconds, "requests": len(ms)}


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


async def measure(url: str, token: str, *, jobs: int, clients: int, rounds: int,
                  requests: int, warmup: int, log: Callable[[str], None]) -> dict[str, Any]:
    """Insert the jobs, then the interleaved rounds; raw per-phase stats."""
    import aiohttp

    connector = aiohttp.TCPConnector(limit=clients)
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(url, headers={"Authorization": f"Bearer {token}"},
                                     connector=connector, timeout=timeout) as session:
        client = LoadClient(session)
        start = time.perf_counter()
        ids = await insert_jobs(client, jobs, clients)
        inserted_s = time.perf_counter() - start
        log(f"inserted {len(ids)} jobs in {inserted_s:.1f} s")
        calls = requests_for(ids)
        phases: list[dict[str, Any]] = []
        for r in range(rounds):
            order = ENDPOINTS[r % 3:] + ENDPOINTS[:r % 3]
            for name in order:
                await run_phase(client, calls[name], warmup, clients)
                latencies, seconds = await run_phase(client, calls[name], requests, clients)
                phases.append({"round": r + 1, "endpoint": name, **phase_stats(latencies, seconds)})
                log(f"round {r + 1} {LABELS[name]}: p50 {phases[-1]['p50_ms']:.1f} ms, "
                    f"p99 {phases[-1]['p99_ms']:.1f} ms, {phases[-1]['rps']:.0f} req/s")
        first = (await client.get(f"/api/v1/jobs/{ids[0]}")).json()
    return {"phases": phases, "inserted": len(ids), "insert_seconds": inserted_s,
            "first_job_state": first.get("state")}


def summarize(phases: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, float]]]:
    """Per endpoint and stat: the median over rounds and the min and max."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for name in ENDPOINTS:
        rows = [p for p in phases if p["endpoint"] == name]
        if not rows:
            continue
        out[name] = {}
        for stat in ("p50_ms", "p99_ms", "mean_ms", "rps"):
            values = [p[stat] for p in rows]
            out[name][stat] = {"median": statistics.median(values), "min": min(values),
                               "max": max(values)}
    return out


def cell(stat: dict[str, float], digits: int = 1) -> str:
    """``median (min-max)``."""
    return f"{stat['median']:.{digits}f} ({stat['min']:.{digits}f}-{stat['max']:.{digits}f})"


def report(result: dict[str, Any]) -> str:
    """The Markdown report of one bench."""
    from raykd.report import markdown_table

    cfg, summary = result["config"], result["summary"]
    rows = [[LABELS[name], cell(s["p50_ms"]), cell(s["p99_ms"]), cell(s["mean_ms"]),
             cell(s["rps"], 0)] for name, s in summary.items()]
    table = markdown_table(["endpoint", "p50 ms", "p99 ms", "mean ms", "req/s"], rows)
    reads_p99 = max(summary[n]["p99_ms"]["median"] for n in READS if n in summary)
    verdict = "met" if reads_p99 < TARGET_P99_MS else "NOT met"
    accepted = summary.get("post", {}).get("rps")
    lines = [
        f"# raykd bench api ({result['date']})",
        "",
        f"{cfg['clients']} concurrent clients (closed loop), {cfg['rounds']} interleaved rounds of "
        f"{cfg['requests']} requests per endpoint after {cfg['warmup']} warm-up requests; "
        f"{result['inserted']} jobs inserted first ({result['insert_seconds']:.1f} s). "
        "Each cell: median over rounds (min-max).",
        "",
        table,
        "",
    ]
    if accepted:
        lines.append(f"Jobs accepted per second at {cfg['clients']} clients: {cell(accepted, 0)}.")
    lines += [
        f"Target p99 < {TARGET_P99_MS:.0f} ms for reads: {verdict} (worst read p99, median over "
        f"rounds: {reads_p99:.1f} ms).",
        "",
        f"Server: one uvicorn process, access log off, SQLite, queue paused (first job still "
        f"{result['first_job_state']!r} at the end). Machine: {cfg['cpus']} CPUs "
        f"({cfg['machine']}), Python {cfg['python']}; the load generator (one asyncio process) "
        "shares these CPUs with the server. Load average (1 min) before/after: "
        f"{cfg.get('load_before', float('nan')):.1f}/{cfg.get('load_after', float('nan')):.1f}.",
    ]
    return "\n".join(lines) + "\n"


def check_options(jobs: int, clients: int, rounds: int, requests: int) -> None:
    """BenchOptionError for options the bench cannot use."""
    for name, value in (("--jobs", jobs), ("--clients", clients), ("--rounds", rounds),
                        ("--requests", requests)):
        if value < 1:
            raise BenchOptionError(f"{name} {value}: expected at least 1")


def run_api_bench(out: Path, *, jobs: int = 1000, clients: int = 50, rounds: int = 5,
                  requests: int = 1000, warmup: int | None = None,
                  log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the bench; write ``<out>/api.md`` and ``<out>/api.json``, print the table.

    Args:
        out: Output directory.
        jobs: Jobs inserted before measuring.
        clients: Concurrent clients.
        rounds: Rounds; each measures every endpoint once, in a rotating order.
        requests: Measured requests per endpoint and round.
        warmup: Unmeasured requests before each measurement (default: a tenth, at least
            ``clients``).
        log: Where progress lines go.

    Returns:
        The result (also in ``api.json``).
    """
    check_options(jobs, clients, rounds, requests)
    warmup = max(clients, requests // 10) if warmup is None else warmup
    token = secrets.token_urlsafe(24)
    tmp = Path(tempfile.mkdtemp(prefix="raykd-bench-api-"))
    proc = None
    load_before = os.getloadavg()[0]
    try:
        proc, url = start_server(tmp, token)
        log(f"server up at {url}")
        try:
            raw = asyncio.run(measure(url, token, jobs=jobs, clients=clients, rounds=rounds,
                                      requests=requests, warmup=warmup, log=log))
        except Exception as err:
            alive = "running" if proc.poll() is None else f"exited with {proc.returncode}"
            tail = (tmp / "server.log").read_text(errors="replace")[-3000:]
            raise RuntimeError(f"bench api failed ({type(err).__name__}: {err}); the server is "
                               f"{alive}; its log ends:\n{tail}") from err
    finally:
        if proc is not None:
            stop_server(proc)
        shutil.rmtree(tmp, ignore_errors=True)
    result = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "config": {"jobs": jobs, "clients": clients, "rounds": rounds, "requests": requests,
                   "warmup": warmup, "cpus": os.cpu_count(), "machine": platform.machine(),
                   "python": platform.python_version(),
                   "load_before": load_before, "load_after": os.getloadavg()[0]},
        **raw,
    }
    result["summary"] = summarize(result["phases"])
    text = report(result)
    out.mkdir(parents=True, exist_ok=True)
    (out / "api.md").write_text(text)
    (out / "api.json").write_text(json.dumps(result, indent=2))
    log(text)
    return result
