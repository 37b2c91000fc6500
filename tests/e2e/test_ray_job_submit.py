"""`ray job submit -- raykd run spec.yaml` against a real Ray head on loopback."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from raykd.service.ray_head import stop_ray_start
from tests.helpers.net import free_port
from tests.helpers.specs import digits_spec

pytestmark = pytest.mark.ray
BIN = Path(sys.executable).parent




@pytest.fixture(scope="module")
def ray_head(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, str]]]:
    """A head started with `ray start --block` in its own process group (stopped with it).

    Token auth on, as the README's commands run it: the session's token (see conftest).
    """
    import ray

    if ray.is_initialized():
        ray.shutdown()
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    assert env["RAY_AUTH_MODE"] == "token" and Path(env["RAY_AUTH_TOKEN_PATH"]).is_file()
    gcs, dash = free_port(), free_port()
    head = subprocess.Popen(
        [str(BIN / "ray"), "start", "--head", "--block", f"--port={gcs}", "--num-cpus=2",
         "--node-ip-address=127.0.0.1", "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}",
         f"--temp-dir={tmp_path_factory.mktemp('ray')}"],
        env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    address = f"http://127.0.0.1:{dash}"
    deadline = time.time() + 90
    while time.time() < deadline:
        probe = subprocess.run([str(BIN / "ray"), "job", "list", "--address", address], env=env,
                               capture_output=True, text=True)
        if probe.returncode == 0:
            break
        time.sleep(2)
    else:
        os.killpg(head.pid, signal.SIGTERM)
        pytest.fail("the Ray head did not come up within 90 s")
    yield address, env
    stop_ray_start(head.pid, head.pid, proc=head)


@pytest.mark.slow
def test_ray_job_submit_runs_raykd(ray_head: tuple[str, dict[str, str]], tmp_path: Path) -> None:
    address, env = ray_head
    spec = digits_spec(str(tmp_path / "runs"), name="submitted",
                       train={"epochs": 2, "batch_size": 64, "lr": 0.003})
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    job_dir = tmp_path / "job"
    proc = subprocess.run(
        [str(BIN / "ray"), "job", "submit", "--address", address, "--submission-id", "raykd-test-1",
         "--runtime-env-json", json.dumps({"env_vars": {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.2"}}),
         "--", str(BIN / "raykd"), "run", str(path), "--job-dir", str(job_dir)],
        env=env, capture_output=True, text=True, timeout=400,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "succeeded" in proc.stdout.lower()
    assert "student: kd" in proc.stdout  # the results table, from the job's logs
    result = json.loads((job_dir / "result.json").read_text())
    assert 0.5 < result["students"][0]["test_accuracy"] <= 1.0
    status = subprocess.run([str(BIN / "ray"), "job", "status", "--address", address, "raykd-test-1"],
                            env=env, capture_output=True, text=True)
    assert "succeeded" in status.stdout.lower()
    # the job API really is behind the token: a client without it is turned away
    anonymous = {k: v for k, v in env.items() if k != "RAY_AUTH_TOKEN_PATH"} | {
        "RAY_AUTH_MODE": "disabled", "HOME": str(tmp_path)}
    refused = subprocess.run([str(BIN / "ray"), "job", "list", "--address", address],
                             env=anonymous, capture_output=True, text=True)
    assert refused.returncode != 0, refused.stdout
    assert "raykd-test-1" not in refused.stdout


@pytest.mark.slow
def test_drivers_run_with_the_services_interpreter_and_a_missing_command_says_so(
        ray_head: tuple[str, dict[str, str]], tmp_path: Path) -> None:
    """Issue 19 item 15: a head whose shell does not find `raykd` (a venv that is not activated).

    The owned head's drivers run as `<the service's python> -m raykd run ...`; with a plain
    `raykd` the job fails, and the reason reported is the shell's line, not Ray's own.
    """
    from types import SimpleNamespace

    from raykd.service.follower import Follower
    from raykd.service.ray_jobs import RAY_TERMINAL, RayJobs, RayUnavailable

    address, env = ray_head
    token = Path(env["RAY_AUTH_TOKEN_PATH"]).read_text().strip()
    spec = tmp_path / "bad.json"
    spec.write_text(json.dumps({"name": "x"}))  # not a valid spec: the driver says so and exits
    bare = {"PATH": "/usr/bin:/bin"}  # what a shell without the activated venv finds
    ours = RayJobs(address, token=token, driver_command=f"{sys.executable} -m raykd", timeout_s=60)
    plain = RayJobs(address, token=token, timeout_s=60)
    deadline = time.monotonic() + 120
    for jobs, sid, owner in ((ours, "venv-python", "alice"), (plain, "venv-plain", None)):
        while True:  # a fresh head may have no job agent yet ("No available agent"): as the scheduler does
            try:
                jobs.submit(submission_id=sid, spec_path=spec, job_id=sid, env=bare, owner=owner)
                break
            except RayUnavailable:
                assert time.monotonic() < deadline, "Ray took no submission within 120 s"
                time.sleep(1)
    while not {ours.status("venv-python"), ours.status("venv-plain")} <= RAY_TERMINAL:
        assert time.monotonic() < deadline, "the drivers did not end within 120 s"
        time.sleep(0.5)
    log = ours.logs("venv-python")
    assert "not found" not in log and "error:" in log, log[-2000:]  # raykd ran, and refused the spec
    assert ours.info("venv-python").metadata == {"raykd_job_id": "venv-python", "raykd_owner": "alice"}

    async def tailed() -> str:  # Ray's tail API (the service's /logs?follow=true): all of it, then the end
        return "".join([chunk async for chunk in ours.tail("venv-python")])

    import asyncio

    assert asyncio.run(tailed()) == log
    why = Follower._driver_error(SimpleNamespace(ray=plain), "venv-plain")  # type: ignore[arg-type]
    assert "raykd: not found" in why and "Running entrypoint" not in why, why
