"""A real two-node Ray cluster from docker/compose.yaml, token auth on, jobs from the host.

The module starts the compose file's `ray-head`, one `ray-worker` and `api` (raykd serve)
with docker/launch.py, the way CI and users without Compose v2 start them: as containers
where a Docker engine answers (``.ci/run`` starts one), each on the compose network under
its service alias, as uid 1000 with ``cap_drop: ALL``; as processes on loopback only where
no engine runs (two raylets, each with its own ports and temp dir). ``RAYKD_TEST_CLUSTER``
(``docker`` / ``processes``) forces one. The containers' image is docker/hostroot.py's
(this checkout's Python environment bound read-only into a near-empty root: a second
instead of the Dockerfile's ~15-minute offline build), or ``RAYKD_IMAGE`` when set (e.g.
raykd:local, built from docker/Dockerfile). Ray's token auth is on exactly as compose
configures it (``RAY_AUTH_MODE=token``, the token from ``RAYKD_RAY_TOKEN``). Each node has
one CPU, so a 2-worker Ray Train student has a worker on each node, and the two teachers
are spread one per node: the tests check with Ray's state API where they ran.

One job goes through the control plane (``raykd submit --watch`` from the host), one
through Ray's own ``ray job submit``; both must succeed.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.helpers.paths import ROOT
from tests.helpers.service import session_ray_token
from tests.helpers.specs import digits_spec

sys.path.insert(0, str(ROOT / "docker"))

import compose_plan  # noqa: E402
import hostroot  # noqa: E402
import launch_docker  # noqa: E402
import launch_processes  # noqa: E402

pytestmark = [pytest.mark.ray, pytest.mark.slow]
BIN = Path(sys.executable).parent
SERVICES = ["ray-head", "ray-worker", "api"]


@dataclass
class Cluster:
    mode: str
    dashboard: str  # Ray's dashboard / job API on the host
    api: str        # the control plane on the host
    token: str      # RAYKD_TOKEN
    storage: str    # the shared volume, as the nodes see it
    ray_env: dict[str, str]  # a Ray client's environment: token auth, the cluster's token


def _port() -> int:
    """A free loopback port outside Ray's worker port range (10002-19999)."""
    while (port := launch_processes.free_port()) < 20000:
        pass
    return port


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    mode = os.environ.get("RAYKD_TEST_CLUSTER", "auto")
    if mode == "auto":
        mode = "docker" if launch_docker.engine_available() else "processes"
        if mode == "docker" and not os.environ.get("RAYKD_IMAGE"):
            try:  # the host-root image lends this checkout to uid 1000: it must be able to read it
                hostroot.host_paths()
            except hostroot.HostRootError as err:
                warnings.warn(f"test_cluster: processes instead of containers: {err}", stacklevel=1)
                mode = "processes"
    elif mode == "docker" and not launch_docker.engine_available():
        pytest.fail("RAYKD_TEST_CLUSTER=docker but no Docker engine answers")
    tmp = tmp_path_factory.mktemp("cluster")
    files = [ROOT / "docker" / "compose.yaml"]
    image = None
    if mode == "docker" and not os.environ.get("RAYKD_IMAGE"):
        image = hostroot.build_image(f"raykd-test-hostroot:{os.getpid()}")
        (tmp / "hostroot.yaml").write_text(yaml.safe_dump(hostroot.overlay(image, tuple(SERVICES))))
        files.append(tmp / "hostroot.yaml")
    ray_token, token = session_ray_token(), secrets.token_urlsafe(24)
    dash, api = _port(), _port()
    settings = {
        "COMPOSE_PROJECT_NAME": f"raykd-test-{os.getpid()}", "RAYKD_RAY_TOKEN": ray_token,
        "RAYKD_TOKEN": token, "RAYKD_DASHBOARD_PORT": str(dash), "RAYKD_API_PORT": str(api),
        "RAYKD_HEAD_CPUS": "1", "RAYKD_WORKER_CPUS": "1", "RAYKD_HEAD_MEMORY_BYTES": "2000000000",
        "RAYKD_WORKER_MEMORY_BYTES": "2000000000", "RAYKD_HEAD_OBJECT_STORE_BYTES": "200000000",
        "RAYKD_WORKER_OBJECT_STORE_BYTES": "200000000", "RAYKD_SHM_SIZE": "512mb",
        "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.1",
    }
    environ = {**os.environ, **settings}
    plan = compose_plan.load_plan(files, environ=environ,
                                  env_file=tmp / "no.env", services=SERVICES, scale={"ray-worker": 1})
    state = tmp / "state"
    ray_env = {k: v for k, v in os.environ.items() if k not in launch_processes.RAY_AUTH_VARS}
    ray_env |= {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": ray_token}
    try:  # a failed start is cleaned up too: no container or raylet outlives the module
        if mode == "docker":
            launch_docker.up(plan, log=lambda _m: None)
            storage = "/data/raykd-runs"
        else:
            launch_processes.up(plan, state, environ=environ, log=None)
            storage = str(state / "volumes" / "raykd-runs")
        yield Cluster(mode, f"http://127.0.0.1:{dash}", f"http://127.0.0.1:{api}", token, storage, ray_env)
    finally:
        if mode == "docker":
            launch_docker.down(plan.project, volumes=True)
            if image:
                subprocess.run(["docker", "rmi", image], capture_output=True, check=False)
        else:
            launch_processes.down(state, timeout_s=10)


def spec(name: str, seeds: tuple[int, int], **scaling: Any) -> dict[str, Any]:
    """A tiny digits job: 2 MLP teachers, one KD student (storage set by who runs it)."""
    out = digits_spec("raykd-runs", name=name,
                      teachers=[{"model": {"name": "mlp", "hidden": [16]}, "seed": s} for s in seeds],
                      teacher_train={"epochs": 3, "batch_size": 64, "lr": 0.003},
                      student={"model": {"name": "mlp", "hidden": [16]}},
                      train={"epochs": 2, "batch_size": 64, "lr": 0.003},
                      scaling={"num_workers": 1, **scaling})
    del out["storage"]
    return out


def placement(cluster: Cluster, submission_id: str) -> dict[str, list[str]]:
    """Node ids of every actor the Ray job ``submission_id`` created, by actor class."""
    from ray.job_submission import JobSubmissionClient
    from ray.util.state import list_actors

    info = JobSubmissionClient(cluster.dashboard).get_job_info(submission_id)
    assert info.driver_info is not None, f"{submission_id}: Ray recorded no driver"
    out: dict[str, list[str]] = {}
    for actor in list_actors(address=cluster.dashboard, filters=[("job_id", "=", info.driver_info.id)],
                             detail=True, limit=10_000, raise_on_missing_output=False):
        out.setdefault(actor.class_name, []).append(actor.node_id)
    return out


def nodes(cluster: Cluster) -> dict[str, bool]:
    """Alive node id -> is the head."""
    from ray.util.state import list_nodes

    return {n.node_id: n.is_head_node for n in list_nodes(address=cluster.dashboard)
            if n.state == "ALIVE"}


def test_two_nodes_with_token_auth(cluster: Cluster) -> None:
    alive = nodes(cluster)
    assert sorted(alive.values()) == [False, True], f"expected a head and a worker node: {alive}"
    # Ray's job API turns away a client without the cluster's token (or with another)...
    for headers in ({}, {"Authorization": "Bearer not-the-token"}):
        refused = httpx.get(f"{cluster.dashboard}/api/jobs/", headers=headers, timeout=30)
        assert refused.status_code in (401, 403), (refused.status_code, refused.text[:200])
    # ...and so does the control plane without its own
    assert httpx.get(f"{cluster.api}/api/v1/jobs", timeout=30).status_code == 401
    ready = httpx.get(f"{cluster.api}/readyz", headers={"Authorization": f"Bearer {cluster.token}"},
                      timeout=30)
    assert ready.json() == {"database": True, "ray": True}


def test_control_plane_job_spreads_over_both_nodes(cluster: Cluster, tmp_path: Path) -> None:
    """`raykd submit --watch` from the host; the student's 2 Ray Train workers on 2 nodes."""
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec("via-api", (11, 12), num_workers=2, cpus_per_worker=1)))
    env = {**cluster.ray_env, "RAYKD_URL": cluster.api, "RAYKD_TOKEN": cluster.token}
    proc = subprocess.run([str(BIN / "raykd"), "submit", str(path), "--job-id", "via-api", "--watch"],
                          env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    headers = {"Authorization": f"Bearer {cluster.token}"}
    job = httpx.get(f"{cluster.api}/api/v1/jobs/via-api", headers=headers, timeout=30).json()
    assert job["state"] == "succeeded", job
    result = httpx.get(f"{cluster.api}/api/v1/jobs/via-api/artifacts/result.json", headers=headers,
                       timeout=30).json()
    assert 0.5 < result["students"][0]["test_accuracy"] <= 1.0
    where = placement(cluster, job["id"] if job["attempts"] == 1 else f"{job['id']}.r{job['attempts'] - 1}")
    alive = nodes(cluster)
    assert sorted(where.get("RayTrainWorker", [])) == sorted(alive), \
        f"the student's 2 workers should run one per node: {where}"
    assert sorted(where.get("TeacherServer", [])) == sorted(alive), \
        f"the 2 teachers should be spread one per node: {where}"


def test_ray_job_submit_runs_on_the_cluster(cluster: Cluster, tmp_path: Path) -> None:
    """Ray's own client, token from the environment, the spec uploaded as the working dir."""
    work = tmp_path / "work"
    work.mkdir()
    (work / "spec.yaml").write_text(yaml.safe_dump(spec("via-ray", (21, 22))))
    runtime_env = json.dumps({"env_vars": {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.1"}})
    proc = subprocess.run(
        [str(BIN / "ray"), "job", "submit", "--address", cluster.dashboard, "--submission-id", "via-ray",
         "--working-dir", str(work), "--runtime-env-json", runtime_env, "--",
         "raykd", "run", "spec.yaml", "--job-id", "via-ray", "--set", f"storage={cluster.storage}"],
        env=cluster.ray_env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "student: kd" in proc.stdout  # the results table, from the driver's log
    where = placement(cluster, "via-ray")
    alive = nodes(cluster)
    actors = [n for ids in where.values() for n in ids]
    assert set(actors) <= set(alive) and sorted(where.get("TeacherServer", [])) == sorted(alive), where
    assert len(where.get("StudentWorker", [])) == 1, where
