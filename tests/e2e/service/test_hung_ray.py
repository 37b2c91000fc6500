"""A hung Ray freezes neither the API nor the queue: a real ``raykd serve`` (uvicorn on loopback)
whose Ray address is a socket that accepts connections and never answers.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers.net import HungRay
from tests.helpers.service import Server
from tests.helpers.specs import digits_spec

TOKEN = "reliability-test-admin-token-0123456789"


@pytest.fixture
def hung_ray() -> Iterator[HungRay]:
    hung = HungRay()
    yield hung
    hung.release()


def _timed(call: Any) -> tuple[float, httpx.Response]:
    t0 = time.monotonic()
    r = call()
    return time.monotonic() - t0, r


@pytest.mark.slow
def test_a_hung_ray_freezes_neither_the_api_nor_the_queue(hung_ray: HungRay,
                                                          tmp_path: Path) -> None:
    server = Server(
        tmp_path,
        "hung",
        token=TOKEN,
        storage=tmp_path / "storage",
        ray_address=hung_ray.url,
        ray_timeout_s=100,  # the checks run while requests wait: never near this
        lease_s=300,
        max_running=1,
        poll_s=0.2,
    )
    auth = {"Authorization": f"Bearer {TOKEN}"}
    url = f"{server.url}/api/v1/jobs"
    try:
        for job_id in ("first", "second"):
            body = {"spec": digits_spec(str(tmp_path / "storage")), "job_id": job_id}
            assert httpx.post(url, json=body, headers=auth, timeout=10).status_code == 201
        deadline = time.monotonic() + 20
        while httpx.get(f"{url}/first", headers=auth, timeout=10).json()["state"] != "submitting":
            assert time.monotonic() < deadline, "the scheduler never tried to submit"
            threading.Event().wait(0.1)
        hanging: list[httpx.Response] = []
        threads = [
            threading.Thread(
                target=lambda p=p: hanging.append(
                    httpx.get(f"{url}/first/logs", headers=auth, timeout=60)
                    if p % 2
                    else httpx.post(f"{url}/first/cancel", headers=auth, timeout=60)
                )
            )
            for p in range(8)
        ]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 10  # the ones beyond what may wait on Ray answer 503 at once
        while len(hanging) < 4 and time.monotonic() < deadline:
            threading.Event().wait(0.05)
        assert 4 <= len(hanging) < 8, "some requests should still be waiting on Ray"
        took, r = _timed(lambda: httpx.post(f"{url}/second/cancel", headers=auth, timeout=30))
        # Bounds well below Ray's 100 s deadline (what a frozen API would take), with room for a
        # loaded machine; /readyz's own deadline for Ray is 1.5 s (routes/health.py)
        assert r.status_code == 200 and r.json()["state"] == "cancelled" and took < 5, (
            took,
            r.text,
        )
        took, r = _timed(lambda: httpx.get(f"{server.url}/healthz", timeout=30))
        assert r.status_code == 200 and took < 5, took
        took, r = _timed(lambda: httpx.get(url, headers=auth, timeout=30))
        assert r.status_code == 200 and took < 5, took
        took, r = _timed(lambda: httpx.get(f"{server.url}/readyz", headers=auth, timeout=30))
        assert r.status_code == 503 and r.json() == {"database": True, "ray": False} and took < 5, (
            took
        )
        assert len(hanging) < 8, "the checks above ran while requests waited on Ray"
        hung_ray.release()  # Ray goes away: what waited on it ends, each with a 503
        for t in threads:
            t.join(60)
        assert len(hanging) == 8 and {r.status_code for r in hanging} == {503}, [
            r.text for r in hanging
        ]
    finally:
        server.stop()
