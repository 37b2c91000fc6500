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
import os
import platform
import secrets
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from raykd.bench import BenchOptionError
from raykd.bench.api_load import (
    ENDPOINTS,
    LABELS,
    SERVERS,
    SPEC,
    LoadClient,
    _session,
    cpu_seconds,
    measure,
    percentile,
    requests_for,
    run_phase,
)
from raykd.bench.api_report import ratios, report, summarize
from raykd.bench.api_servers import start_server, start_yardstick, stop_server

__all__ = [
    "ENDPOINTS", "LABELS", "QUICK", "SERVERS", "SPEC", "LoadClient", "_session", "check_options",
    "cpu_seconds", "measure", "percentile", "ratios", "report", "requests_for", "run_api_bench",
    "run_phase", "start_server", "start_yardstick", "stop_server", "summarize",
]

QUICK = {"jobs": 40, "clients": 8, "rounds": 1, "requests": 60, "warmup": 8}
"""``--quick``: a few seconds, for tests (the numbers mean little)."""


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
