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

each after a warm-up, in interleaved rounds (the order rotates every round).

Beside it runs the yardstick (:mod:`raykd.bench.yardstick`): a minimal FastAPI app under
the same uvicorn settings, with the same bearer check, on the same SQLite file, answering
the same JSON (the bench checks that it does before measuring). Every phase is measured on
both servers, one after the other (which goes first alternates), so both see the same
machine. The report gives, per server and endpoint, the median over rounds of p50/p99/mean
latency and requests per second, with the spread (min-max) over rounds, and raykd's
requests per second as a ratio to the yardstick's of the same round. The load generator
runs on the same machine as the servers and takes part of its CPUs; the report says how
many there are.
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
TARGET_RATIO = {"get": 0.8, "list": 0.8, "post": 0.5}
"""Target: raykd's requests/s at least this share of the yardstick's."""
SERVERS = ("raykd", "yardstick")
QUICK = {"jobs": 40, "clients": 8, "rounds": 1, "requests": 60, "warmup": 8}
"""``--quick``: a few seconds, for tests (the numbers mean little)."""
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
    "from raykd.bench.yardstick import UVICORN_SETTINGS\n"
    "from raykd.service.app import create_app\n"
    "from raykd.service.settings import Settings\n"
    "uvicorn.run(create_app(Settings()), port=int(sys.argv[1]), **UVICORN_SETTINGS)\n"
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
    """Start raykd's server; return its process and URL once ``/healthz`` answers."""
    return _start([sys.executable, "-c", SERVER_CODE], tmp, server_env(tmp, token),
                  "server.log", timeout_s)


def start_yardstick(tmp: Path, token: str, *, timeout_s: float = 60) -> tuple[Any, str]:
    """Start the yardstick on raykd's database file (made by raykd's server, already up)."""
    return _start([sys.executable, "-m", "raykd.bench.yardstick"], tmp, server_env(tmp, token),
                  "yardstick.log", timeout_s, str(tmp / "raykd.db"))


PORT_TRIES = 3
"""Starts on a fresh port when the last one was taken meanwhile (another process bound it
between :func:`free_port` and the server's bind)."""


def _start(cmd: list[str], tmp: Path, env: dict[str, str], log_name: str, timeout_s: float,
           *args: str) -> tuple[Any, str]:
    """Run ``cmd PORT *args`` in ``tmp``; its process and URL once ``/healthz`` answers."""
    for _ in range(PORT_TRIES - 1):
        try:
            return _start_once(cmd, tmp, env, log_name, timeout_s, *args)
        except RuntimeError as err:
            if "address already in use" not in str(err):
                raise
    return _start_once(cmd, tmp, env, log_name, timeout_s, *args)


def _start_once(cmd: list[str], tmp: Path, env: dict[str, str], log_name: str,
                timeout_s: float, *args: str) -> tuple[Any, str]:
    import httpx

    port = free_port()
    with open(tmp / log_name, "wb") as log:  # the child keeps its own descriptor
        proc = subprocess.Popen([*cmd, str(port), *args], cwd=tmp, env=env, stdout=log,
                                stderr=subprocess.STDOUT)
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
    tail = (tmp / log_name).read_text(errors="replace")[-2000:]
    raise RuntimeError(f"the bench server {cmd[-1].splitlines()[-1]} did not come up (exit code "
                       f"{proc.returncode}):\n{tail}")


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


def _spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def summarize(phases: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, dict[str, float]]]]:
    """Per server, endpoint and stat: the median over rounds and the min and max."""
    out: dict[str, dict[str, dict[str, dict[str, float]]]] = {}
    for server in SERVERS:
        for name in ENDPOINTS:
            rows = [p for p in phases if p.get("server", "raykd") == server
                    and p["endpoint"] == name]
            if rows:
                out.setdefault(server, {})[name] = {
                    stat: _spread([p[stat] for p in rows])
                    for stat in ("p50_ms", "p99_ms", "mean_ms", "rps", "cpu_ms")
                    if all(stat in p for p in rows)}
    return out


def ratios(phases: list[dict[str, Any]], stat: str = "rps") -> dict[str, dict[str, float]]:
    """Per endpoint: raykd's req/s over the yardstick's of the same round (median, min,
    max); with ``stat="cpu_ms"``, the yardstick's CPU per request over raykd's (the same
    sense: 1 is as efficient as the yardstick, 0.5 twice its CPU)."""
    got = {(p["round"], p.get("server", "raykd"), p["endpoint"]): p[stat]
           for p in phases if stat in p}
    out = {}
    for name in ENDPOINTS:
        values = [(v / got[(r, "yardstick", e)]) if stat == "rps" else got[(r, "yardstick", e)] / v
                  for (r, s, e), v in got.items()
                  if s == "raykd" and e == name and (r, "yardstick", e) in got and v > 0]
        if values:
            out[name] = _spread(values)
    return out


def cell(stat: dict[str, float], digits: int = 1) -> str:
    """``median (min-max)``."""
    return f"{stat['median']:.{digits}f} ({stat['min']:.{digits}f}-{stat['max']:.{digits}f})"


def verdicts(result: dict[str, Any]) -> list[str]:
    """One line per target: met or not, with the numbers."""
    raykd, ratio = result["summary"].get("raykd", {}), result.get("ratios", {})
    lines = []
    for name, share in TARGET_RATIO.items():
        if name in ratio:
            got = ratio[name]["median"]
            lines.append(f"Target {LABELS[name]} >= {share:.1f}x the yardstick's req/s: "
                         f"{'met' if got >= share else 'NOT met'} ({got:.2f}x).")
    reads = [raykd[n]["p99_ms"]["median"] for n in READS if n in raykd]
    if reads:
        verdict = "met" if max(reads) < TARGET_P99_MS else "NOT met"
        lines.append(f"Target p99 < {TARGET_P99_MS:.0f} ms for reads: {verdict} (worst read p99, "
                     f"median over rounds: {max(reads):.1f} ms).")
    return lines


def table(result: dict[str, Any]) -> str:
    """The Markdown table: raykd's row and the yardstick's per endpoint."""
    from raykd.console_text import markdown_table

    rows = []
    for name in ENDPOINTS:
        for server in SERVERS:
            s = result["summary"].get(server, {}).get(name)
            if s is None:
                continue
            mine = server == "raykd"
            ratio = result.get("ratios", {}).get(name) if mine else None
            by_cpu = result.get("cpu_ratios", {}).get(name) if mine else None
            cpu = cell(s["cpu_ms"], 2) if "cpu_ms" in s else "-"
            rows.append([LABELS[name], server, cell(s["p50_ms"]), cell(s["p99_ms"]),
                         cell(s["mean_ms"]), cell(s["rps"], 0), cpu,
                         cell(ratio, 2) if ratio else "" if mine else "1",
                         cell(by_cpu, 2) if by_cpu else "" if mine else "1"])
    return markdown_table(["endpoint", "server", "p50 ms", "p99 ms", "mean ms", "req/s",
                           "server CPU ms/req", "x yardstick req/s", "x yardstick CPU/req"],
                          rows)


def report(result: dict[str, Any]) -> str:
    """The Markdown report of one bench."""
    cfg = result["config"]
    accepted = result["summary"].get("raykd", {}).get("post", {}).get("rps")
    lines = [
        f"# raykd bench api ({result['date']})",
        "",
        f"{cfg['clients']} concurrent clients (closed loop), {cfg['rounds']} interleaved rounds of "
        f"{cfg['requests']} requests per endpoint and server after {cfg['warmup']} warm-up "
        f"requests; {result['inserted']} jobs inserted first ({result['insert_seconds']:.1f} s). "
        "Each cell: median over rounds (min-max); x yardstick req/s: raykd's req/s over the "
        "yardstick's in the same round. Server CPU ms/req: the server process's CPU time "
        "(user + system) over the phase's requests; x yardstick CPU/req: the yardstick's over "
        "raykd's (1: as cheap per request), steadier than req/s on a shared machine, where "
        "each server's req/s follows the share of the CPUs the other work leaves it.",
        "",
        table(result),
        "",
    ]
    if accepted:
        lines.append(f"Jobs accepted per second at {cfg['clients']} clients: {cell(accepted, 0)}.")
    lines += verdicts(result)
    lines += [
        "",
        "Yardstick: a minimal FastAPI app (raykd/bench/yardstick.py) under the same uvicorn "
        "settings, with the same bearer check (hmac.compare_digest), one sqlite3 connection to "
        "the same database file and the same SQL, answering the same JSON (checked before "
        f"measuring: {result.get('same_json')}); its POST inserts the row and its labels "
        "without validating the spec.",
        "",
        f"Servers: one uvicorn process each, access log off, SQLite, queue paused (first job "
        f"still {result['first_job_state']!r} at the end). Machine: {cfg['cpus']} CPUs "
        f"({cfg['machine']}), Python {cfg['python']}; the load generator (one asyncio process) "
        "shares these CPUs with the servers. Load average (1 min) before/after: "
        f"{cfg.get('load_before', float('nan')):.1f}/{cfg.get('load_after', float('nan')):.1f}.",
    ]
    return "\n".join(lines) + "\n"


def check_options(jobs: int, clients: int, rounds: int, requests: int) -> None:
    """BenchOptionError for options the bench cannot use."""
    for name, value in (("--jobs", jobs), ("--clients", clients), ("--rounds", rounds),
                        ("--requests", requests)):
        if value < 1:
            raise BenchOptionError(f"{name} {value}: expected at least 1")


def run_api_bench(out: Path, *, jobs: int = 1000, clients: int = 50, rounds: int = 3,
                  requests: int = 1000, warmup: int | None = None, quick: bool = False,
                  log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the bench; write ``<out>/api.md`` and ``<out>/api.json``, print the table.

    Args:
        out: Output directory.
        jobs: Jobs inserted before measuring.
        clients: Concurrent clients.
        rounds: Rounds; each measures every endpoint on both servers, in a rotating order.
        requests: Measured requests per endpoint, server and round.
        warmup: Unmeasured requests before each measurement (default: a tenth, at least
            ``clients``).
        quick: A few seconds' run (:data:`QUICK`) instead of the options above.
        log: Where progress lines go.

    Returns:
        The result (also in ``api.json``).
    """
    if quick:
        jobs, clients, rounds, requests, warmup = (QUICK[k] for k in
                                                   ("jobs", "clients", "rounds", "requests",
                                                    "warmup"))
    check_options(jobs, clients, rounds, requests)
    warmup = max(clients, requests // 10) if warmup is None else warmup
    token = secrets.token_urlsafe(24)
    tmp = Path(tempfile.mkdtemp(prefix="raykd-bench-api-"))
    procs: list[Any] = []
    load_before = os.getloadavg()[0]
    try:
        proc, url = start_server(tmp, token)
        procs.append(proc)
        stick, stick_url = start_yardstick(tmp, token)
        procs.append(stick)
        log(f"server up at {url}, yardstick at {stick_url}")
        try:
            raw = asyncio.run(measure({"raykd": url, "yardstick": stick_url}, token, jobs=jobs,
                                      clients=clients, rounds=rounds, requests=requests,
                                      warmup=warmup, log=log,
                                      pids={"raykd": proc.pid, "yardstick": stick.pid}))
        except Exception as err:
            alive = "running" if proc.poll() is None else f"exited with {proc.returncode}"
            tail = (tmp / "server.log").read_text(errors="replace")[-3000:]
            raise RuntimeError(f"bench api failed ({type(err).__name__}: {err}); the server is "
                               f"{alive}; its log ends:\n{tail}") from err
    finally:
        for p in procs:
            stop_server(p)
        shutil.rmtree(tmp, ignore_errors=True)
    result = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "config": {"jobs": jobs, "clients": clients, "rounds": rounds, "requests": requests,
                   "warmup": warmup, "quick": quick, "cpus": os.cpu_count(),
                   "machine": platform.machine(), "python": platform.python_version(),
                   "load_before": load_before, "load_after": os.getloadavg()[0]},
        **raw,
    }
    result["summary"] = summarize(result["phases"])
    result["ratios"] = ratios(result["phases"])
    result["cpu_ratios"] = ratios(result["phases"], "cpu_ms")
    text = report(result)
    out.mkdir(parents=True, exist_ok=True)
    (out / "api.md").write_text(text)
    (out / "api.json").write_text(json.dumps(result, indent=2))
    log(text)
    return result
