"""``raykd bench api`` and its yardstick: the report's statistics, the quick run's rows, and
the yardstick answering raykd's JSON for the same jobs (real servers on loopback)."""

from __future__ import annotations

import asyncio
import json
import secrets
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from raykd.bench import api as bench_api
from raykd.core.errors import UserError

pytest.importorskip("raykd.service.app")


def _phases() -> list[dict[str, Any]]:
    """Three rounds; the yardstick serves twice raykd's requests per second, at a quarter
    of raykd's CPU per request."""
    return [{"endpoint": e, "round": r, "server": s, "p50_ms": r * 1.0, "p99_ms": r * 10.0,
             "mean_ms": r * 2.0, "rps": 100.0 * r * (2 if s == "yardstick" else 1),
             "cpu_ms": 1.0 * r * (0.25 if s == "yardstick" else 1)}
            for r in (1, 2, 3) for e in bench_api.ENDPOINTS for s in bench_api.SERVERS]


def test_bench_statistics_ratios_and_report() -> None:
    assert bench_api.percentile([float(i) for i in range(1, 101)], 99) == 99.0
    assert bench_api.percentile([3.0], 50) == 3.0
    phases = _phases()
    summary = bench_api.summarize(phases)
    assert summary["raykd"]["get"]["p99_ms"] == {"median": 20.0, "min": 10.0, "max": 30.0}
    assert summary["yardstick"]["post"]["rps"]["median"] == 400.0
    ratios = bench_api.ratios(phases)
    assert ratios["list"] == {"median": 0.5, "min": 0.5, "max": 0.5}
    cpu_ratios = bench_api.ratios(phases, "cpu_ms")
    assert cpu_ratios["post"] == {"median": 0.25, "min": 0.25, "max": 0.25}
    result = {"date": "d", "config": {"clients": 50, "rounds": 3, "requests": 10, "warmup": 5,
                                      "cpus": 2, "machine": "x", "python": "3"},
              "inserted": 10, "insert_seconds": 1.0, "first_job_state": "queued",
              "same_json": {"get": True, "list": True}, "summary": summary, "ratios": ratios,
              "cpu_ratios": cpu_ratios}
    text = bench_api.report(result)
    assert ("| GET /api/v1/jobs/{id} | raykd | 2.0 (1.0-3.0) | 20.0 (10.0-30.0) | 4.0 (2.0-6.0) "
            "| 200 (100-300) | 2.00 (1.00-3.00) | 0.50 (0.50-0.50) | 0.25 (0.25-0.25) |") in text
    assert "| GET /api/v1/jobs/{id} | yardstick |" in text and "| 1 | 1 |" in text
    assert "Jobs accepted per second at 50 clients: 200 (100-300)" in text
    assert "Target GET /api/v1/jobs?limit=50 >= 0.8x the yardstick's req/s: NOT met (0.50x)" in text
    assert "Target POST /api/v1/jobs >= 0.5x the yardstick's req/s: met (0.50x)" in text
    assert "p99 < 50 ms for reads: met" in text
    with pytest.raises(UserError, match="--clients 0"):
        bench_api.check_options(1, 0, 1, 1)


def test_quick_bench_has_the_yardstick_rows(tmp_path: Path) -> None:
    lines: list[str] = []
    result = bench_api.run_api_bench(tmp_path, quick=True, log=lines.append)
    assert result["config"]["quick"] and result["inserted"] == bench_api.QUICK["jobs"]
    assert result["first_job_state"] == "queued"
    assert result["same_json"] == {"get": True, "list": True}
    assert set(result["summary"]) == set(bench_api.SERVERS)
    for server in bench_api.SERVERS:
        assert set(result["summary"][server]) == set(bench_api.ENDPOINTS)
    assert set(result["ratios"]) == set(bench_api.ENDPOINTS)
    assert all(p["requests"] == bench_api.QUICK["requests"] for p in result["phases"])
    report = (tmp_path / "api.md").read_text()
    for label in bench_api.LABELS.values():
        assert f"| {label} | raykd |" in report and f"| {label} | yardstick |" in report
    saved = json.loads((tmp_path / "api.json").read_text())
    assert saved["ratios"]["get"]["median"] > 0
    assert set(saved["cpu_ratios"]) in (set(), set(bench_api.ENDPOINTS))  # /proc: Linux only


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[dict[str, str], str, Path]]:
    """raykd's bench server and the yardstick on its database: URLs, token, directory."""
    token = secrets.token_urlsafe(24)
    tmp = Path(tempfile.mkdtemp(prefix="raykd-test-yardstick-"))
    procs = []
    try:
        proc, url = bench_api.start_server(tmp, token)
        procs.append(proc)
        stick, stick_url = bench_api.start_yardstick(tmp, token)
        procs.append(stick)
        yield {"raykd": url, "yardstick": stick_url}, token, tmp
    finally:
        for p in procs:
            bench_api.stop_server(p)
        shutil.rmtree(tmp, ignore_errors=True)


def _both(urls: dict[str, str], token: str, path: str, **params: Any) -> list[httpx.Response]:
    headers = {"Authorization": f"Bearer {token}"}
    return [httpx.get(f"{urls[s]}{path}", params=params, headers=headers, timeout=30)
            for s in bench_api.SERVERS]


def test_the_yardstick_answers_raykds_json(servers: tuple[dict[str, str], str, Path]) -> None:
    from raykd.service.store import Store

    urls, token, tmp = servers
    headers = {"Authorization": f"Bearer {token}"}
    body = {"spec": bench_api.SPEC, "labels": {"team": "a", "bench": "x"}, "priority": 3}
    made = [httpx.post(f"{urls['raykd']}/api/v1/jobs", json=body, headers=headers, timeout=30)
            for _ in range(3)]
    assert [r.status_code for r in made] == [201, 201, 201]
    ids = [r.json()["id"] for r in made]
    # one job finished, with metrics and a result: every field of the view is filled
    store = Store(f"sqlite:///{tmp / 'raykd.db'}")
    store.update(ids[1], state="succeeded", stage="done", progress=1.0, attempts=1,
                 latest_metrics={"val_accuracy": 0.75, "epoch": 3}, result={"accuracy": 0.8},
                 started_at=time.time() - 5, finished_at=time.time(), note="ok")
    for job_id in ids:
        a, b = _both(urls, token, f"/api/v1/jobs/{job_id}")
        assert a.status_code == b.status_code == 200
        assert a.json() == b.json(), job_id
    assert _both(urls, token, f"/api/v1/jobs/{ids[1]}")[0].json()["state"] == "succeeded"
    assert _both(urls, token, f"/api/v1/jobs/{ids[0]}")[0].json()["queue_position"] == 1
    page = _both(urls, token, "/api/v1/jobs", limit=2)
    assert page[0].json() == page[1].json() and page[0].json()["next_cursor"]
    # the same token check: a wrong one is refused by both
    for s in bench_api.SERVERS:
        wrong = httpx.get(f"{urls[s]}/api/v1/jobs/{ids[0]}", timeout=30,
                          headers={"Authorization": f"Bearer {token}x"})
        assert wrong.status_code == 401


def test_a_read_after_a_write_is_never_stale(servers: tuple[dict[str, str], str, Path]) -> None:
    """raykd's reads by key use one kept connection: it sees another process's commits."""
    from raykd.service.store import Store

    urls, token, tmp = servers
    headers = {"Authorization": f"Bearer {token}"}
    made = httpx.post(f"{urls['raykd']}/api/v1/jobs", json={"spec": bench_api.SPEC},
                      headers=headers, timeout=30).json()
    url = f"{urls['raykd']}/api/v1/jobs/{made['id']}"
    assert httpx.get(url, headers=headers, timeout=30).json()["state"] == "queued"
    store = Store(f"sqlite:///{tmp / 'raykd.db'}")
    for state in ("cancelled", "failed"):
        store.update(made["id"], state=state, error=f"now {state}")
        seen = httpx.get(url, headers=headers, timeout=30).json()
        assert (seen["state"], seen["error"], seen["queue_position"]) == \
            (state, f"now {state}", None)
    listed = httpx.get(f"{urls['raykd']}/api/v1/jobs", params={"state": "failed"},
                       headers=headers, timeout=30).json()
    assert made["id"] in [j["id"] for j in listed["items"]]


def test_load_client_runs_a_phase(servers: tuple[dict[str, str], str, Path]) -> None:
    urls, token, _ = servers

    async def go() -> tuple[list[float], float]:
        async with bench_api._session(urls["yardstick"], token, 4) as s:
            calls = bench_api.requests_for(["none"])
            return await bench_api.run_phase(bench_api.LoadClient(s), calls["list"], 8, 4)

    latencies, seconds = asyncio.run(go())
    assert len(latencies) == 8 and seconds > 0
