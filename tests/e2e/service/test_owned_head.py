"""The Ray head ``raykd serve`` owns: no service secret reaches it, and it outlives a crash.

One real service per module, with no ``RAYKD_RAY_ADDRESS`` (it starts its own head), every
secret setting given (admin and user tokens, Ray token, database URL), and a job that
runs slowly (a pause after each student epoch) so that its driver can be inspected in
``/proc`` and the service killed under it.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers.api import ADMIN, ALICE, auth, post, small_spec, sse, wait_state
from tests.helpers.service import Server, session_ray_token

pytestmark = pytest.mark.ray
SECRET_VARS = ("RAYKD_TOKEN", "RAYKD_USERS", "RAYKD_RAY_TOKEN", "RAYKD_DATABASE_URL")


@pytest.fixture(scope="module")
def owned(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("owned")
    storage = tmp / "storage"
    server = Server(tmp, "owned", token=ADMIN, users=json.dumps({"alice": ALICE}), storage=storage,
                    database_url=f"sqlite:///{tmp / 'jobs.db'}", allow_fault_injection="true",
                    model_allowlist="raykd_nothing_here", ray_num_cpus=2, max_running=1, poll_s=0.3)
    yield server
    server.stop()
    record = storage / ".service" / "head.json"
    if record.is_file():  # a test failed between a kill and a restart: do not leave the head
        try:
            os.killpg(json.loads(record.read_text())["pgid"], signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.fixture(scope="module")
def slow_job(owned: Server) -> dict[str, Any]:
    """A job whose students pause 2 s after each epoch, seen running (its driver started)."""
    spec = small_spec(name="slow", train={"epochs": 3, "batch_size": 64, "lr": 0.003},
                      faults={"epoch_sleep_s": 2.0})
    job = post(owned, {"spec": spec}, token=ADMIN).json()
    assert "id" in job, job
    return wait_state(owned, job["id"], ("running",))


def head_record(server: Server) -> dict[str, Any]:
    path = Path(server.env["RAYKD_STORAGE"]) / ".service" / "head.json"
    assert path.stat().st_mode & 0o077 == 0  # the owner's alone
    return dict(json.loads(path.read_text()))


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it (from ``/proc``'s parent links)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        out.append(todo.pop())
        todo += children.get(out[-1], [])
    return out


def environ(pid: int) -> dict[str, str] | None:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None  # gone meanwhile
    env = dict(item.decode(errors="replace").partition("=")[::2] for item in raw.split(b"\0") if item)
    env["\0cmdline"] = cmdline.replace(b"\0", b" ").decode(errors="replace")
    return env


def heads(token_path: Path) -> list[int]:
    """Pids of the ``ray start --head`` processes that read ``token_path``."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        env = environ(int(proc.name))
        if env and "ray start --head" in env["\0cmdline"] and env.get("RAY_AUTH_TOKEN_PATH") == str(token_path):
            found.append(int(proc.name))
    return found


@pytest.mark.slow
def test_no_service_secret_reaches_the_head_its_workers_or_a_jobs_driver(
        owned: Server, slow_job: dict[str, Any]) -> None:
    secrets = [ADMIN, ALICE, owned.env["RAYKD_DATABASE_URL"], owned.env["RAYKD_USERS"]]
    envs = {pid: env for pid in descendants(head_record(owned)["pid"]) if (env := environ(pid))}
    assert len(envs) >= 4  # ray start, GCS, raylet, workers, ...
    drivers = [env for env in envs.values()
               if "raykd" in env["\0cmdline"] and f"--job-id {slow_job['id']}" in env["\0cmdline"]]
    assert drivers, "the job's driver is not among the head's processes"
    assert drivers[0].get("RAYKD_SUBMISSION_ID") == slow_job["id"]  # what the driver needs...
    assert drivers[0].get("RAYKD_MODEL_ALLOWLIST") == "raykd_nothing_here"
    for pid, env in envs.items():  # ...and nothing of the service's own
        assert not set(SECRET_VARS) & set(env), (pid, env["\0cmdline"])
        assert env.get("RAY_AUTH_TOKEN") != session_ray_token(), pid
        text = "\n".join(env.values())
        assert not [s for s in secrets if s in text], (pid, env["\0cmdline"])


@pytest.mark.slow
def test_a_killed_service_reattaches_to_its_head_and_the_job_finishes(
        owned: Server, slow_job: dict[str, Any]) -> None:
    token_path = Path(owned.env["RAYKD_STORAGE"]) / ".service" / "ray_token"
    before = head_record(owned)
    assert heads(token_path) == [before["pid"]]
    owned.kill()  # kill -9: no shutdown, the head (a session of its own) keeps the job running
    owned.start()
    assert head_record(owned)["pid"] == before["pid"]  # adopted, not started again
    assert heads(token_path) == [before["pid"]]
    done = wait_state(owned, slow_job["id"], ("succeeded", "failed", "cancelled"))
    assert done["state"] == "succeeded", done
    assert "reconciled after a service restart" in (done["note"] or ""), done
    events = sse(f"{owned.url}/api/v1/jobs/{slow_job['id']}/events", ADMIN)
    on_disk = (Path(owned.env["RAYKD_STORAGE"]) / slow_job["id"] / "events.jsonl").read_text().splitlines()
    assert [e["id"] for e in events] == list(range(1, len(on_disk) + 1))  # every event kept
    assert events[-1]["event"] == "job_finished"
    assert sorted({e["data"]["epoch"] for e in events if e["event"] == "epoch"}) == [1, 2, 3]


@pytest.mark.slow
def test_a_clean_stop_stops_the_head_and_its_jobs_say_so(owned: Server) -> None:
    job = post(owned, {"spec": small_spec(name="stopped", faults={"epoch_sleep_s": 5.0})}, token=ADMIN).json()
    wait_state(owned, job["id"], ("running",))
    token_path = Path(owned.env["RAYKD_STORAGE"]) / ".service" / "ray_token"
    pid = head_record(owned)["pid"]
    # SIGTERM: uvicorn's shutdown runs the lifespan's end (given time enough on a loaded machine:
    # a SIGKILL after the helper's default 10 s would skip it, leaving head.json behind)
    owned.stop(grace_s=120)
    assert heads(token_path) == []  # the head and its processes are gone
    assert not (token_path.parent / "head.json").exists()
    owned.start()  # a new head; the job that was running says why it ended
    assert head_record(owned)["pid"] != pid and len(heads(token_path)) == 1
    stopped = httpx.get(f"{owned.url}/api/v1/jobs/{job['id']}", headers=auth(ADMIN), timeout=30).json()
    assert stopped["state"] == "failed" and "stopped with the service" in stopped["error"], stopped
    assert "retry resumes" in stopped["error"]


def test_a_recorded_head_that_answers_only_errors_is_neither_adopted_nor_killed(tmp_path: Path) -> None:
    """A head busy restarting its dashboard answers 5xx: that is no refusal of the token, and
    stopping it would kill every job on it. The service refuses to start instead, saying so."""
    import subprocess
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from raykd.service.ray_head import HEAD_FILE, OwnedHead

    class Busy(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
            self.send_error(503, "dashboard restarting")

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Busy)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    head = subprocess.Popen(["sleep", "300"], start_new_session=True)  # stands in for `ray start`
    try:
        (tmp_path / HEAD_FILE).write_text(json.dumps({
            "pid": head.pid, "pgid": head.pid, "address": f"http://127.0.0.1:{server.server_port}",
            "temp_dir": str(tmp_path / "ray"), "ports": {}}))
        with pytest.raises(RuntimeError, match="alive but did not answer"):
            OwnedHead.attach(tmp_path, "a-token", answer_timeout_s=2)
        assert head.poll() is None  # still running: its jobs too
        assert (tmp_path / HEAD_FILE).is_file()  # the record is kept for the next start
    finally:
        server.shutdown()
        head.kill()
        head.wait()

