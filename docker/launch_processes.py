"""A plan's containers as plain processes on loopback: the fallback where no Docker engine runs.

Each container becomes one process (its entrypoint + command, its environment) in its own
session, with the same topology translated to one host:

- every service name, hostname and container name, and ``0.0.0.0``, become ``127.0.0.1``;
- every port a container names (a ``--*port=N`` flag, ``RAYKD_PORT``, its ``ports:``, an
  address of its own in its healthcheck) gets a host port of its own: the published one when
  it has one, else a free one; ``host:N`` references from other containers follow;
- ``ray start`` nodes also get a temp dir of their own and their own dashboard-agent (and,
  for the head, Ray-client) ports, so several raylets share the host. (Ray's GCS, raylets
  and workers still listen on every interface, as Ray always does; token auth guards them);
- a named volume is a folder ``<state>/volumes/<name>``, a bind mount its host path; every
  argument or variable naming a mount target names that folder instead;
- the environment is this process's, without Ray auth variables (the service's own decide),
  with this Python's ``bin`` first on PATH; the healthcheck is run as a command.

Resource limits, capabilities and GPU reservations have no process equivalent and are not
applied. ``down`` stops every process group recorded in ``<state>/processes.json`` and
removes the Ray temp dirs it made (each process's output stays in ``<state>/<name>/output.log``).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from compose_plan import Container, Plan

RAY_AUTH_VARS = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")
RAY_AGENT_PORT, RAY_CLIENT_PORT = 52365, 10001  # ray start's fixed defaults (others are random)
_OWN_FLAG = re.compile(r"^(--[a-z-]*port)=(\d+)$")
_HOSTPORT = re.compile(r"(?<![\w.-])([A-Za-z0-9_.-]+):(\d+)\b")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _seconds(text: str) -> float:
    """A compose duration ("1m30s", "10s", "500ms") in seconds."""
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001, "us": 1e-6}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", text)
    return sum(float(n) * units[u] for n, u in parts) if parts else float(text or 0)


@dataclass
class Proc:
    """One container as a process: what to run, where, and its ports (container -> host)."""

    container: Container
    argv: list[str]
    env: dict[str, str]
    cwd: Path
    ports: dict[int, int]
    health: list[str] | None


def _is_ray_start(argv: list[str]) -> bool:
    return len(argv) >= 2 and Path(argv[0]).name == "ray" and argv[1] == "start"


def _own_ports(c: Container) -> set[int]:
    argv = c.argv()
    found = {int(m.group(2)) for a in argv if (m := _OWN_FLAG.match(a))}
    found |= {p.container_port for p in c.ports}
    if "RAYKD_PORT" in c.environment:
        found.add(int(c.environment["RAYKD_PORT"]))
    for text in c.health.test if c.health else []:
        found |= {int(p) for h, p in _HOSTPORT.findall(text) if h in ("127.0.0.1", "localhost")}
    if _is_ray_start(argv):
        found.add(RAY_AGENT_PORT)
        if "--head" in argv:
            found.add(RAY_CLIENT_PORT)
    return found


def plan_processes(plan: Plan, state: Path, environ: Mapping[str, str] | None = None) -> list[Proc]:
    """The processes of ``plan``: argv, environment and ports rewritten for one host.

    ``environ``: the environment they start from (default: this process's).
    """
    base = dict(os.environ if environ is None else environ)
    ports: dict[str, dict[int, int]] = {}
    for c in plan.containers:
        published = {p.container_port: p.host_port for p in c.ports if p.host_port}
        ports[c.name] = {n: published.get(n) or free_port() for n in sorted(_own_ports(c))}
    alias: dict[str, str] = {}
    for c in reversed(plan.containers):  # the service name means its first replica
        for name in (c.service, c.hostname, c.name):
            if name:
                alias[name] = c.name
    mounts = {m.target: (str(state / "volumes" / m.source.removeprefix(f"{plan.project}_"))
                         if m.named else m.source) for c in plan.containers for m in c.mounts}
    for path in mounts.values():
        Path(path).mkdir(parents=True, exist_ok=True)
    return [_one(c, ports, alias, mounts, state, base) for c in plan.containers]


def _one(c: Container, ports: dict[str, dict[int, int]], alias: dict[str, str],
         mounts: dict[str, str], state: Path, base: dict[str, str]) -> Proc:
    own = ports[c.name]

    def hostport(m: re.Match[str]) -> str:
        host, port = m.group(1), int(m.group(2))
        target = c.name if host in ("127.0.0.1", "localhost", "0.0.0.0") else alias.get(host)
        if target is None or port not in ports[target]:
            return m.group(0)
        return f"127.0.0.1:{ports[target][port]}"

    def rewrite(text: str) -> str:
        flag = _OWN_FLAG.match(text)
        if flag and int(flag.group(2)) in own:
            return f"{flag.group(1)}={own[int(flag.group(2))]}"
        text = _HOSTPORT.sub(hostport, text)
        for target, source in sorted(mounts.items(), key=lambda kv: -len(kv[0])):
            text = re.sub(rf"(?<![\w/]){re.escape(target)}(?=/|\b|$)", source, text)
        return text.replace("0.0.0.0", "127.0.0.1")

    argv = [rewrite(a) for a in c.argv()]
    if not argv:
        raise ValueError(f"{c.name}: no entrypoint or command to run as a process")
    if _is_ray_start(argv):
        tag = hashlib.sha1(f"{state}/{c.name}".encode()).hexdigest()[:8]
        extra = {"--temp-dir": f"/tmp/rkl-{tag}",
                 "--dashboard-agent-listen-port": str(own[RAY_AGENT_PORT])}
        if "--head" in argv:
            extra["--ray-client-server-port"] = str(own[RAY_CLIENT_PORT])
        argv += [f"{k}={v}" for k, v in extra.items() if not any(a.startswith(k) for a in argv)]
    env = {k: v for k, v in base.items() if k not in RAY_AUTH_VARS}
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    env |= {k: rewrite(v) for k, v in c.environment.items()}
    if "RAYKD_PORT" in c.environment:
        env["RAYKD_PORT"] = str(own[int(c.environment["RAYKD_PORT"])])
    health = [rewrite(t) for t in c.health.test] if c.health else None
    cwd = state / c.name
    cwd.mkdir(parents=True, exist_ok=True)
    return Proc(c, argv, env, cwd, own, health)


def _healthy(p: Proc) -> bool:
    assert p.health is not None
    try:
        return subprocess.run(p.health, env=p.env, cwd=p.cwd, capture_output=True,
                              timeout=30).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def wait_healthy(p: Proc, popen: subprocess.Popen[bytes], timeout_s: float | None = None) -> None:
    """Run the healthcheck every second until it passes (or the process ends: an error)."""
    h = p.container.health
    if h is None or p.health is None:
        return
    limit = timeout_s or (_seconds(h.start_period) + h.retries * max(_seconds(h.interval), 1.0) + 30)
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if popen.poll() is not None:
            raise RuntimeError(f"{p.container.name} exited with {popen.returncode}; "
                               f"see {p.cwd / 'output.log'}")
        if _healthy(p):
            return
        time.sleep(1)
    raise RuntimeError(f"{p.container.name} was not healthy within {limit:g} s; see {p.cwd / 'output.log'}")


def up(plan: Plan, state: Path, *, environ: Mapping[str, str] | None = None,
       log: Callable[[str], None] | None = print) -> list[Proc]:
    """Start every container of ``plan`` as a process, in order; recorded for :func:`down`."""
    state.mkdir(parents=True, exist_ok=True)
    procs = plan_processes(plan, state, environ)
    started: dict[str, tuple[Proc, subprocess.Popen[bytes]]] = {}
    record = state / "processes.json"
    try:
        for p in procs:
            for dep, condition in p.container.depends_on.items():
                for name, (q, popen) in started.items():
                    if q.container.service != dep:
                        continue
                    if condition == "service_healthy":
                        wait_healthy(q, popen)
                    elif condition == "service_completed_successfully" and popen.wait() != 0:
                        raise RuntimeError(f"{name} exited with {popen.returncode}")
            out = open(p.cwd / "output.log", "ab")  # noqa: SIM115 - the child keeps it
            popen = subprocess.Popen(p.argv, env=p.env, cwd=p.cwd, stdout=out, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
            out.close()
            started[p.container.name] = (p, popen)
            record.write_text(json.dumps({"pids": {n: q.pid for n, (_p, q) in started.items()},
                                          "temp_dirs": [_temp_dir(q.argv) for q, _ in started.values()
                                                        if _temp_dir(q.argv)]}))
            if log is not None:
                log(f"started {p.container.name} as pid {popen.pid} ({' '.join(p.argv[:3])} ...)")
        for p, popen in started.values():
            wait_healthy(p, popen)
    except BaseException:
        down(state)
        raise
    return procs


def down(state: Path, timeout_s: float = 30) -> None:
    """Stop every process group ``up`` recorded in ``state`` (SIGTERM, then SIGKILL)."""
    record = state / "processes.json"
    if not record.is_file():
        return
    recorded = json.loads(record.read_text())
    pids = list(recorded["pids"].values())
    for pid in reversed(pids):
        try:
            os.killpg(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout_s
    for pid in pids:
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.2)
        if _alive(pid):
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    for temp in recorded["temp_dirs"]:  # Ray's session files (sockets, its own logs)
        shutil.rmtree(temp, ignore_errors=True)
    record.unlink()


def _temp_dir(argv: list[str]) -> str | None:
    """The ``--temp-dir`` this launcher gave a ``ray start`` (None for other processes)."""
    found = [a.split("=", 1)[1] for a in argv if a.startswith("--temp-dir=/tmp/rkl-")]
    return found[0] if found else None


def _alive(pid: int) -> bool:
    try:
        os.killpg(pid, 0)
    except ProcessLookupError:
        return False
    try:  # reap it if it is our child (a zombie still has a group)
        done, _ = os.waitpid(pid, os.WNOHANG)
        return done == 0
    except ChildProcessError:
        return True
