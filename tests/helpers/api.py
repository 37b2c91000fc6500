"""The REST API as the end-to-end tests call it: users' tokens, a small spec, reading a job's
SSE stream and waiting for a state or a stage (polled, each poll a real request)."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx

from tests.helpers.service import Server
from tests.helpers.specs import digits_spec

ADMIN, ALICE, BOB = (
    "admin-secret-0123456789abcdef-0123",
    "alice-secret-0123456789abcdef-0123",
    "bob-secret-0123456789abcdef-01234",
)


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def small_spec(**overrides: Any) -> dict[str, Any]:
    spec = digits_spec(
        "/unused",
        train={"epochs": 2, "batch_size": 64, "lr": 0.003},
        methods=[{"method": "kd"}],
        teacher_train={"epochs": 4, "batch_size": 64, "lr": 0.003},
    )
    spec.update(overrides)
    return spec


def post(
    server: Server, body: dict[str, Any], token: str = ALICE, **headers: str
) -> httpx.Response:
    return httpx.post(
        f"{server.url}/api/v1/jobs", json=body, headers={**auth(token), **headers}, timeout=30
    )


def sse(
    url: str, token: str, last_id: int | None = None, limit: int | None = None
) -> list[dict[str, Any]]:
    """Read an SSE stream (until it ends, or ``limit`` events); each event as a dict."""
    headers = {**auth(token), **({"Last-Event-ID": str(last_id)} if last_id is not None else {})}
    out: list[dict[str, Any]] = []
    with httpx.stream("GET", url, headers=headers, timeout=httpx.Timeout(30, read=120)) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        event: dict[str, Any] = {}
        for line in r.iter_lines():
            if line.startswith("id: "):
                event["id"] = int(line[4:])
            elif line.startswith("event: "):
                event["event"] = line[7:]
            elif line.startswith("data: "):
                event["data"] = json.loads(line[6:])
            elif line == "" and event:
                out.append(event)
                event = {}
                if limit is not None and len(out) >= limit:
                    break
    return out


def wait_state(
    server: Server, job_id: str, states: tuple[str, ...], timeout: float = 240
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = httpx.get(
            f"{server.url}/api/v1/jobs/{job_id}", headers=auth(ADMIN), timeout=30
        ).json()
        if job["state"] in states:
            return job
        time.sleep(0.5)
    raise AssertionError(f"{job_id} never reached {states}: {job}")


def wait_stage(server: Server, job_id: str, stage: str, timeout: float = 240) -> dict[str, Any]:
    """Wait until the job runs ``stage`` (its actors and workers exist then)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = httpx.get(
            f"{server.url}/api/v1/jobs/{job_id}", headers=auth(ADMIN), timeout=30
        ).json()
        if job["state"] == "running" and job["stage"] == stage:
            return job
        assert job["state"] in ("queued", "submitting", "pending", "running"), job
        time.sleep(0.2)
    raise AssertionError(f"{job_id} never reached stage {stage}")
