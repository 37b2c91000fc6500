"""The two servers ``raykd bench api`` measures: raykd's app and the yardstick, each under
uvicorn in a subprocess on 127.0.0.1 (a free port, retried), and stopping them."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

__all__ = ["PORT_TRIES", "SERVER_CODE", "free_port", "server_env", "start_server",
           "start_yardstick", "stop_server"]

SERVER_CODE = (
    "import sys, uvicorn\n"
    "from raykd.bench.yardstick import UVICORN_SETTINGS\n"
    "from raykd.service.app import create_app\n"
    "from raykd.service.settings import Settings\n"
    "uvicorn.run(create_app(Settings()), port=int(sys.argv[1]), **UVICORN_SETTINGS)\n"
)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def server_env(tmp: Path, token: str) -> dict[str, str]:
    """The environment of the bench server: temporary storage, paused queue, no Ray."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAYKD_")}
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    env.update({
        "RAYKD_TOKEN": token,
        "RAYKD_STORAGE": str(tmp / "storage"),
        "RAYKD_DATABASE_URL": f"sqlite:///{tmp / 'raykd.db'}",
        "RAYKD_PAUSED": "1",
        "RAYKD_RAY_ADDRESS": "http://127.0.0.1:9",
    })
    return env


def start_server(tmp: Path, token: str, *, timeout_s: float = 120) -> tuple[Any, str]:
    """Start raykd's server; return its process and URL once ``/healthz`` answers."""
    return _start([sys.executable, "-c", SERVER_CODE], tmp, server_env(tmp, token),
                  "server.log", timeout_s)


def start_yardstick(tmp: Path, token: str, *, timeout_s: float = 60) -> tuple[Any, str]:
    """Start the yardstick on raykd's database file (made by raykd's server, already up)."""
    return _start([sys.executable, "-m", "raykd.bench.yardstick"], tmp, server_env(tmp, token),
                  "yardstick.log", timeout_s, str(tmp / "raykd.db"))


PORT_TRIES = 3
"""Starts on a fresh port when the last one was taken meanwhile (another process bound it
between :func:`free_port` and the server's bind)."""


def _start(cmd: list[str], tmp: Path, env: dict[str, str], log_name: str, timeout_s: float,
           *args: str) -> tuple[Any, str]:
    """Run ``cmd PORT *args`` in ``tmp``; its process and URL once ``/healthz`` answers."""
    for _ in range(PORT_TRIES - 1):
        try:
            return _start_once(cmd, tmp, env, log_name, timeout_s, *args)
        except RuntimeError as err:
            if "address already in use" not in str(err):
                raise
    return _start_once(cmd, tmp, env, log_name, timeout_s, *args)


def _start_once(cmd: list[str], tmp: Path, env: dict[str, str], log_name: str,
                timeout_s: float, *args: str) -> tuple[Any, str]:
    import httpx

    port = free_port()
    with open(tmp / log_name, "wb") as log:  # the child keeps its own descriptor
        proc = subprocess.Popen([*cmd, str(port), *args], cwd=tmp, env=env, stdout=log,
                                stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    stop_server(proc)
    tail = (tmp / log_name).read_text(errors="replace")[-2000:]
    raise RuntimeError(f"the bench server {cmd[-1].splitlines()[-1]} did not come up (exit code "
                       f"{proc.returncode}):\n{tail}")


def stop_server(proc: Any) -> None:
    """Stop the server subprocess (SIGTERM, then SIGKILL)."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
