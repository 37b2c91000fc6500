"""Real services for the control-plane tests: a Ray head and uvicorn servers on loopback."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from raykd.service.ray_head import stop_ray_start
from tests.helpers.net import free_port, port_free

VENV_BIN = str(Path(sys.executable).parent)




RAY_AUTH_VARS = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")


def session_ray_token() -> str:
    """This test session's Ray token (conftest writes it; Ray's token auth stays on)."""
    return Path(os.environ["RAY_AUTH_TOKEN_PATH"]).read_text().strip()




def service_env(**extra: str) -> dict[str, str]:
    """The environment of test services: raykd on PATH and no Ray auth variables of our own.

    Ray's token auth is on everywhere: a Ray head gets the session's token file
    (:class:`RayHead`); ``raykd serve`` gets the token only as ``RAYKD_RAY_TOKEN`` (so the
    tests show that the service itself passes it on to Ray).
    """
    env = {k: v for k, v in os.environ.items() if k not in RAY_AUTH_VARS}
    return {**env, "RAY_USAGE_STATS_ENABLED": "0", "PATH": f"{VENV_BIN}:{os.environ.get('PATH', '')}",
            "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.1", **extra}


class RayHead:
    """``ray start --head --block`` on loopback, in its own session (stopped with SIGTERM).

    ``start()`` after ``kill()`` brings up a new head on the same ports: to the service it
    is the same address, but a cluster that has forgotten every job (as a restarted head has).
    """

    def __init__(self, tmp: Path, num_cpus: int = 2, env: dict[str, str] | None = None,
                 args: list[str] | None = None) -> None:
        self.tmp, self.num_cpus, self.env, self.args = tmp, num_cpus, env or {}, args or []
        self.dashboard_port = free_port()
        self.ports = [free_port() for _ in range(3)]
        self.address = f"http://127.0.0.1:{self.dashboard_port}"
        self.start()

    def start(self) -> None:
        gcs, agent, client = self.ports
        temp_dir = Path(f"/tmp/rkd-{os.getpid()}-{self.dashboard_port}")
        cmd = [f"{VENV_BIN}/ray", "start", "--head", "--block", f"--port={gcs}",
               "--dashboard-host=127.0.0.1", f"--dashboard-port={self.dashboard_port}",
               f"--num-cpus={self.num_cpus}", f"--temp-dir={temp_dir}", "--disable-usage-stats",
               f"--dashboard-agent-listen-port={agent}", f"--ray-client-server-port={client}",
               *self.args]
        self.log = open(self.tmp / "ray-head.log", "ab")  # noqa: SIM115
        env = service_env(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=os.environ["RAY_AUTH_TOKEN_PATH"],
                          **self.env)
        self.proc = subprocess.Popen(cmd, env=env, stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        wait_http(f"{self.address}/api/version", timeout=90, proc=self.proc)

    def kill(self) -> None:
        """The head and everything it started die at once (as a lost head node would)."""
        os.killpg(self.proc.pid, signal.SIGKILL)  # its GCS, raylet, drivers: one process group
        self.proc.wait(timeout=30)
        self.log.close()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not all(port_free(p) for p in
                                                      (self.dashboard_port, *self.ports)):
            time.sleep(0.5)

    def stop(self) -> None:
        stop_ray_start(self.proc.pid, self.proc.pid, proc=self.proc)
        self.log.close()


class Server:
    """``raykd serve`` (``run_server``) as a subprocess with ``RAYKD_*`` settings."""

    def __init__(self, tmp: Path, name: str, **settings: Any) -> None:
        self.port = free_port()
        self.tmp, self.name = tmp, name
        settings.setdefault("ray_token", session_ray_token())
        self.env = service_env(**{f"RAYKD_{k.upper()}": str(v) for k, v in settings.items()},
                               RAYKD_PORT=str(self.port))
        self.url = f"http://127.0.0.1:{self.port}"
        self.start()

    def start(self) -> None:
        self.log = open(self.tmp / f"{self.name}.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "from raykd.service.app import run_server; run_server()"],
            env=self.env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_http(f"{self.url}/healthz", timeout=120, proc=self.proc)
        except BaseException:
            self.stop()  # a service that never answered does not outlive the test
            raise

    def kill(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)
        self.log.close()

    def stop(self, grace_s: float = 10) -> None:
        stop_group(self.proc, grace_s)
        self.log.close()


def wait_http(url: str, *, timeout: float, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}")
        try:
            httpx.get(url, timeout=2)
            return
        except httpx.HTTPError:
            time.sleep(0.3)
    raise RuntimeError(f"{url} did not answer within {timeout} s")


def stop_group(proc: subprocess.Popen[bytes], grace_s: float = 10) -> None:
    """SIGTERM to the process group; SIGKILL if it has not exited within ``grace_s``."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
