"""The audit log and retention, on a real service (uvicorn on loopback, a real database).

The service is paused and points at a Ray that is not there: nothing here runs a job, and
nothing waits for a Ray head. Retention is tested with jobs written into the database
before the service starts, their ``finished_at`` set days back (no waiting for a clock).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from raykd.service.database import migrate
from raykd.service.store import Store
from raykd.service.tables import JobRow
from tests.helpers.api import ADMIN, ALICE, auth, post, small_spec
from tests.helpers.service import Server

DAY = 86400.0


def stored_job(job_id: str, state: str, finished_days_ago: float | None) -> JobRow:
    now = time.time()
    finished = None if finished_days_ago is None else now - finished_days_ago * DAY
    return JobRow(id=job_id, name=job_id, kind="run", owner="alice", state=state, priority=0, spec={},
                  created_at=(finished or now) - 60, finished_at=finished, latest_metrics={}, attempts=1,
                  progress=1.0, last_seq=0, cancel_requested=False)


@pytest.fixture(scope="module")
def audited(tmp_path_factory: pytest.TempPathFactory, database_url: str) -> Iterator[Server]:
    """A service with retention of 2 days, over a database holding jobs of every age."""
    tmp = tmp_path_factory.mktemp("audit")
    storage = tmp / "storage"
    migrate(database_url)
    store = Store(database_url)
    for job_id, state, days in (("old-done", "succeeded", 3.0), ("old-failed", "failed", 30.0),
                                ("recent-done", "succeeded", 1.0), ("old-queued", "queued", None)):
        store.add(stored_job(job_id, state, days), {})
        (storage / job_id).mkdir(parents=True)
        (storage / job_id / "result.json").write_text("{}")
    store.engine.dispose()
    server = Server(tmp, "audit", token=ADMIN, users=json.dumps({"alice": ALICE}), storage=storage,
                    database_url=database_url, paused="true", ray_address="http://127.0.0.1:1",
                    retention_days=2)
    yield server
    server.stop()


def audit_log(server: Server, token: str = ADMIN, **params: Any) -> httpx.Response:
    return httpx.get(f"{server.url}/api/v1/audit", headers=auth(token), params=params, timeout=30)


def wait_for(check: Any, timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if found := check():
            return found
        time.sleep(0.2)
    raise AssertionError(f"{check} never held")


def test_retention_deletes_finished_jobs_past_the_setting_and_says_so(audited: Server) -> None:
    storage = Path(audited.env["RAYKD_STORAGE"])

    def deleted() -> list[dict[str, Any]]:
        return list(audit_log(audited, action="retention").json()["items"])

    entries = wait_for(lambda: len(deleted()) == 2 and deleted())
    assert {e["job_id"] for e in entries} == {"old-done", "old-failed"}
    assert {e["actor"] for e in entries} == {"service"} and entries[0]["detail"]["retention_days"] == 2
    for gone in ("old-done", "old-failed"):
        assert httpx.get(f"{audited.url}/api/v1/jobs/{gone}", headers=auth(ADMIN)).status_code == 404
        assert not (storage / gone).exists()
    for kept in ("recent-done", "old-queued"):  # too recent, or not finished: kept
        assert httpx.get(f"{audited.url}/api/v1/jobs/{kept}", headers=auth(ADMIN)).status_code == 200
        assert (storage / kept / "result.json").is_file()


def test_every_action_on_a_job_is_audited_with_who_and_from_where(audited: Server) -> None:
    url, alice = f"{audited.url}/api/v1/jobs", auth(ALICE)
    job = post(audited, {"spec": small_spec(name="audited")}).json()
    jid = job["id"]
    assert httpx.patch(f"{url}/{jid}", json={"priority": 3}, headers=alice).status_code == 200
    assert httpx.post(f"{url}/{jid}/cancel", headers=alice).status_code == 200
    (Path(audited.env["RAYKD_STORAGE"]) / jid).mkdir(exist_ok=True)
    (Path(audited.env["RAYKD_STORAGE"]) / jid / "result.json").write_text("{}")
    assert httpx.get(f"{url}/{jid}/artifacts/result.json", headers=alice).status_code == 200
    assert httpx.post(f"{url}/{jid}/retry", headers=alice).status_code == 200
    assert httpx.post(f"{url}/{jid}/cancel", headers=auth(ADMIN)).status_code == 200
    assert httpx.delete(f"{url}/{jid}", headers=alice).status_code == 204
    login = httpx.post(f"{audited.url}/login", data={"token": ALICE, "next": "/jobs"})
    assert login.status_code == 303

    mine = audit_log(audited, job_id=jid).json()["items"]
    assert [(e["actor"], e["action"]) for e in reversed(mine)] == [
        ("alice", "submit"), ("alice", "priority"), ("alice", "cancel"), ("alice", "download"),
        ("alice", "retry"), ("admin", "cancel"), ("alice", "delete")]
    assert {e["client"] for e in mine} == {"127.0.0.1"}
    assert mine[-1]["detail"]["name"] == "audited" and mine[3]["detail"] == {"path": "result.json"}
    logins = audit_log(audited, action="login", actor="alice").json()["items"]
    assert logins and logins[0]["client"] == "127.0.0.1" and logins[0]["job_id"] is None


def test_the_audit_log_is_the_admins_paged_and_filtered(audited: Server) -> None:
    for i in range(3):
        post(audited, {"spec": small_spec(name=f"paged-{i}")})
    assert audit_log(audited, token=ALICE).status_code == 403
    assert audit_log(audited, token="wrong").status_code == 401
    everything = audit_log(audited, limit=500).json()
    assert everything["next_cursor"] is None and len(everything["items"]) >= 5
    ids = [e["id"] for e in everything["items"]]
    assert ids == sorted(ids, reverse=True)  # newest first
    paged, cursor = [], None
    while True:
        page = audit_log(audited, limit=2, **({"cursor": cursor} if cursor else {})).json()
        paged += [e["id"] for e in page["items"]]
        if not (cursor := page["next_cursor"]):
            break
    assert paged == ids
    submits = audit_log(audited, action="submit", actor="alice").json()["items"]
    assert len(submits) >= 4 and {(e["actor"], e["action"]) for e in submits} == {("alice", "submit")}
    for params, code in (({"cursor": "x1"}, 400), ({"cursor": "9" * 310}, 422), ({"action": "nope"}, 422),
                         ({"limit": 0}, 422), ({"limit": 501}, 422), ({"actor": "a" * 65}, 422)):
        bad = audit_log(audited, **params)
        assert bad.status_code == code and "detail" in bad.json(), (params, bad.status_code, bad.text)


def test_behind_a_tls_proxy_the_cookie_is_secure_and_the_audit_names_the_real_client(
        audited: Server) -> None:
    """A reverse proxy on this host (trusted by default) that ends TLS and forwards the client."""
    forwarded = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.7"}
    login = httpx.post(f"{audited.url}/login", data={"token": ALICE, "next": "/jobs"}, headers=forwarded)
    assert login.status_code == 303
    cookie = login.headers["set-cookie"].lower()
    assert "secure" in cookie and "httponly" in cookie and "samesite=strict" in cookie
    plain = httpx.post(f"{audited.url}/login", data={"token": ALICE, "next": "/jobs"})
    assert "secure" not in plain.headers["set-cookie"].lower()  # plain http: a Secure cookie would be dropped
    logins = audit_log(audited, action="login").json()["items"]
    assert [e["client"] for e in logins[:2]] == ["127.0.0.1", "203.0.113.7"]
