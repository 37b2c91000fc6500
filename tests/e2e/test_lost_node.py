"""A Ray node lost mid-job (issue 14, item 6), on a real two-node cluster on loopback.

A head (1 CPU) and a second raylet (``ray start --address``, 1 CPU), token auth on, and
``raykd serve`` in front. The head's CPU is held by a placeholder actor while the job
starts, so its student actor can only land on the second node; once the student is
training there, the placeholder goes and the second node is killed (SIGKILL of its whole
process group, as a lost machine). The job must end within a bounded time — here it
finishes on the head, its student resumed from its last saved epoch, no epoch counted
twice — and the control plane's state must be Ray's.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers.service import VENV_BIN, RayHead, Server, free_port, service_env
from tests.helpers.specs import digits_spec

pytestmark = pytest.mark.ray
ADMIN = "node-loss-admin-token-0123456789abcdef"
# the GCS declares a silent node dead after 3 missed 1 s health checks (default: ~30 s)
FAST_DEATH = {"RAY_health_check_period_ms": "1000", "RAY_health_check_failure_threshold": "3",
              "RAY_health_check_initial_delay_ms": "1000"}
END_WITHIN_S = 180


def ray_python(head: RayHead, code: str) -> str:
    """Run ``code`` in a fresh Python that connected to the cluster; its stdout."""
    gcs = f"127.0.0.1:{head.ports[0]}"
    env = service_env(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=os.environ["RAY_AUTH_TOKEN_PATH"])
    prelude = f"import ray, json\nray.init(address={gcs!r}, namespace='node-loss', log_to_driver=False)\n"
    out = subprocess.run([sys.executable, "-c", prelude + code], env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


class WorkerNode:
    """``ray start --address=<head> --block`` with its own ports: a second raylet."""

    def __init__(self, head: RayHead, tmp: Path) -> None:
        self.log = open(tmp / "ray-worker.log", "ab")  # noqa: SIM115
        cmd = [f"{VENV_BIN}/ray", "start", "--block", f"--address=127.0.0.1:{head.ports[0]}",
               "--num-cpus=1", f"--dashboard-agent-listen-port={free_port()}",
               f"--node-manager-port={free_port()}", f"--object-manager-port={free_port()}",
               f"--metrics-export-port={free_port()}", '--resources={"worker_node": 1}']
        env = service_env(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=os.environ["RAY_AUTH_TOKEN_PATH"],
                          **FAST_DEATH)
        self.proc = subprocess.Popen(cmd, env=env, stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def kill(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)
        self.log.close()


def nodes(head: RayHead) -> list[dict[str, Any]]:
    from ray.util.state import list_nodes

    return [{"id": n.node_id, "head": n.is_head_node, "state": n.state}
            for n in list_nodes(address=head.address, raise_on_missing_output=False)]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("node-loss")
    head = RayHead(tmp, num_cpus=1, env=FAST_DEATH, args=['--resources={"head_node": 1}'])
    worker: WorkerNode | None = None
    server: Server | None = None
    try:  # a failed setup stops what it started too (a stray head breaks later ray.init()s)
        worker = WorkerNode(head, tmp)
        deadline = time.monotonic() + 90
        while sum(n["state"] == "ALIVE" for n in nodes(head)) < 2:
            assert time.monotonic() < deadline, "the second node never joined"
            time.sleep(1)
        server = Server(tmp, "node-loss", token=ADMIN, storage=tmp / "storage",
                        ray_address=head.address, max_running=1, poll_s=0.3,
                        allow_fault_injection="true")
        yield {"head": head, "worker": worker, "server": server}
    finally:
        if server is not None:
            server.stop()
        if worker is not None and worker.proc.poll() is None:
            worker.kill()
        head.stop()


def api(server: Server, method: str, path: str, **kw: Any) -> Any:
    r = httpx.request(method, f"{server.url}/api/v1{path}", timeout=30,
                      headers={"Authorization": f"Bearer {ADMIN}"}, **kw)
    assert r.status_code < 300, r.text
    return r.json()


@pytest.mark.slow
def test_a_lost_node_mid_job_ends_the_job_in_bounded_time_as_ray_sees_it(
        cluster: dict[str, Any]) -> None:
    head, worker, server = cluster["head"], cluster["worker"], cluster["server"]
    ray_python(head, "@ray.remote(num_cpus=1, resources={'head_node': 0.01})\n"
                     "class Hold:\n    def ok(self): return 1\n"
                     "h = Hold.options(name='hold', lifetime='detached').remote(); ray.get(h.ok.remote())")
    spec = digits_spec("/unused", name="node-loss", methods=[{"method": "kd"}],
                       train={"epochs": 8, "batch_size": 64, "lr": 0.003},
                       teachers=[{"model": {"name": "mlp", "hidden": [32]}, "seed": 1}],
                       teacher_train={"epochs": 3, "batch_size": 64, "lr": 0.003},
                       faults={"epoch_sleep_s": 1.0})  # a slow student: the node dies mid-run
    job = api(server, "POST", "/jobs", json={"spec": spec})
    deadline = time.monotonic() + 300
    while True:
        now = api(server, "GET", f"/jobs/{job['id']}")
        if now["stage"] == "students" and now["progress"] > 0:  # its first epoch is in
            break
        assert now["state"] in ("queued", "submitting", "pending", "running"), now
        assert time.monotonic() < deadline, now
        time.sleep(0.3)
    from ray.util.state import list_actors

    where = [a.node_id for a in list_actors(address=head.address, filters=[
        ("class_name", "=", "StudentWorker"), ("state", "=", "ALIVE")])]
    lost = next(n["id"] for n in nodes(head) if not n["head"])
    assert where == [lost], (where, nodes(head))  # the student trains on the node about to die

    ray_python(head, "ray.kill(ray.get_actor('hold'))")  # room on the head for the restart
    worker.kill()
    start = time.monotonic()
    while (now := api(server, "GET", f"/jobs/{job['id']}"))["state"] not in ("succeeded", "failed", "cancelled"):
        assert time.monotonic() - start < END_WITHIN_S, f"still {now['state']} {END_WITHIN_S} s after the node died"
        time.sleep(0.5)
    print(f"node lost -> job {now['state']} in {time.monotonic() - start:.1f} s")
    assert {n["id"]: n["state"] for n in nodes(head)}[lost] == "DEAD"
    from ray.job_submission import JobSubmissionClient

    client, settle = JobSubmissionClient(head.address), time.monotonic() + 60
    while (ray_state := client.get_job_status(job["id"]).value) == "RUNNING" and time.monotonic() < settle:
        time.sleep(0.5)  # the driver exits a moment after its last event
    assert (now["state"], ray_state) == ("succeeded", "SUCCEEDED"), (now, ray_state)
    events = [e for e in (json.loads(line) for line in
                          (Path(server.env["RAYKD_STORAGE"]) / job["id"] / "events.jsonl").read_text().splitlines())]
    assert any(e["type"] == "student_restarted" for e in events)
    assert [e["epoch"] for e in events if e["type"] == "epoch"] == list(range(1, 9))  # each once
    assert now["result"]["students"][0]["test_accuracy"] > 0.8
