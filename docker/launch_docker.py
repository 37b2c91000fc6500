"""A plan's containers with plain ``docker run`` on user-defined networks (no Compose needed).

Each container is started detached, labelled with its project, on the project's network
with its service name as a network alias (so ``ray-head:6379`` resolves as under Compose),
after the containers it depends on are started / healthy / completed as ``depends_on`` says.
``down`` removes every container labelled with the project, then its networks (and, with
``volumes=True``, its named volumes).
"""

from __future__ import annotations

import os
import shlex
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from compose_plan import Build, Container, Plan

LABEL = "raykd.launch.project"
Runner = Callable[[list[str]], subprocess.CompletedProcess[str]]


def run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=False)


def engine_available(runner: Runner = run) -> bool:
    """A Docker engine answers (``docker info``)."""
    try:
        return runner(["docker", "info", "--format", "{{.ServerVersion}}"]).returncode == 0
    except FileNotFoundError:
        return False


def build_argv(build: Build) -> list[str]:
    args = [a for k, v in sorted(build.args.items()) for a in ("--build-arg", f"{k}={v}")]
    return ["docker", "build", "-f", str(build.dockerfile), "-t", build.image, *args, str(build.context)]


def _gpus(resources: dict[str, object]) -> str | None:
    devices = ((resources.get("reservations") or {}) if isinstance(resources, dict) else {})
    for dev in (devices.get("devices") or []) if isinstance(devices, dict) else []:
        if "gpu" in (dev.get("capabilities") or []):
            if dev.get("device_ids"):
                return "device=" + ",".join(str(d) for d in dev["device_ids"])
            return str(dev.get("count", "all"))
    return None


def run_argv(plan: Plan, c: Container, env_file: Path | None = None) -> list[str]:
    """The ``docker run`` command line of container ``c``.

    With ``env_file`` the environment goes through that file (``--env-file``), not the
    command line, where every local user could read its tokens.
    """
    argv = ["docker", "run", "-d", "--name", c.name, "--label", f"{LABEL}={plan.project}",
            "--label", f"com.docker.compose.project={plan.project}",
            "--label", f"com.docker.compose.service={c.service}",
            "--network", c.networks[0], "--network-alias", c.service]
    if c.hostname:
        argv += ["--hostname", c.hostname]
    if env_file is not None:
        argv += ["--env-file", str(env_file)]
    else:
        for key, value in sorted(c.environment.items()):
            argv += ["-e", f"{key}={value}"]
    for m in c.mounts:
        argv += ["-v", f"{m.source}:{m.target}{':ro' if m.read_only else ''}"]
    for p in c.ports:
        argv += ["-p", f"{p.host_ip}:{p.host_port or ''}:{p.container_port}"]
    o = c.options
    if o.get("init"):
        argv.append("--init")
    if o.get("shm_size"):
        argv += ["--shm-size", str(o["shm_size"])]
    for flag, key in (("--cap-drop", "cap_drop"), ("--cap-add", "cap_add"), ("--security-opt", "security_opt")):
        for value in o.get(key) or []:
            argv += [flag, str(value)]
    for flag, key in (("--restart", "restart"), ("--user", "user"), ("--workdir", "working_dir")):
        if o.get(key):
            argv += [flag, str(o[key])]
    limits = (o.get("resources") or {}).get("limits") or {}
    if limits.get("memory"):
        argv += ["--memory", str(limits["memory"])]
    if limits.get("cpus"):
        argv += ["--cpus", str(limits["cpus"])]
    gpus = _gpus(o.get("resources") or {})
    if gpus:
        argv += ["--gpus", gpus]
    if c.health:
        h = c.health
        test = h.test[2] if h.test[:2] == ["sh", "-c"] else shlex.join(h.test)
        argv += ["--health-cmd", test, "--health-interval", h.interval, "--health-timeout", h.timeout,
                 "--health-retries", str(h.retries), "--health-start-period", h.start_period]
    if c.entrypoint is not None:
        argv += ["--entrypoint", c.entrypoint[0] if c.entrypoint else ""]
    argv.append(c.image)
    return argv + (c.entrypoint or [])[1:] + (c.command or [])


def _inspect(name: str, fmt: str, runner: Runner) -> str:
    return runner(["docker", "inspect", "--format", fmt, name]).stdout.strip()


def wait_for(c: Container, condition: str, timeout_s: float, runner: Runner = run) -> None:
    """Block until container ``c`` is started / healthy / completed successfully."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = _inspect(c.name, "{{.State.Status}}", runner)
        if condition == "service_completed_successfully":
            if status == "exited":
                code = _inspect(c.name, "{{.State.ExitCode}}", runner)
                if code != "0":
                    raise RuntimeError(f"{c.name} exited with {code}: docker logs {c.name}")
                return
        elif condition == "service_healthy":
            health = _inspect(c.name, "{{if .State.Health}}{{.State.Health.Status}}{{end}}", runner)
            if health == "healthy":
                return
            if status in ("exited", "dead"):
                raise RuntimeError(f"{c.name} stopped before it was healthy: docker logs {c.name}")
        elif status == "running" or status == "exited":
            return
        time.sleep(1)
    raise RuntimeError(f"{c.name} was not {condition.removeprefix('service_')} within {timeout_s:g} s")


def up(plan: Plan, *, timeout_s: float = 300, runner: Runner = run, log: Callable[[str], None] = print) -> None:
    """Create the networks and volumes, start every container in order, wait until each is healthy.

    (Like ``docker compose up -d --wait``: a container with a healthcheck counts as up once
    healthy, one without once running.)
    """
    for net in plan.networks:
        if runner(["docker", "network", "inspect", net]).returncode != 0:
            _check(runner(["docker", "network", "create", "--label", f"{LABEL}={plan.project}", net]))
    for vol in plan.volumes:
        _check(runner(["docker", "volume", "create", "--label", f"{LABEL}={plan.project}", vol]))
    for c in plan.containers:
        for dep, condition in c.depends_on.items():
            for other in plan.by_service(dep):
                wait_for(other, condition, timeout_s, runner)
        runner(["docker", "rm", "-f", c.name])
        with tempfile.TemporaryDirectory(prefix="raykd-launch-") as tmp:
            env_file = Path(tmp) / "env"
            fd = os.open(env_file, os.O_WRONLY | os.O_CREAT, 0o600)
            with os.fdopen(fd, "w") as f:
                f.writelines(f"{k}={v}\n" for k, v in sorted(c.environment.items()))
            _check(runner(run_argv(plan, c, env_file)))
        log(f"started {c.name} ({c.image})")
    for c in plan.containers:
        if c.options.get("restart") != "no":  # one-shot jobs are not waited for
            wait_for(c, "service_healthy" if c.health else "service_started", timeout_s, runner)


def down(project: str, *, volumes: bool = False, runner: Runner = run) -> None:
    """Remove the project's containers and networks (and its named volumes with ``volumes``)."""
    label = f"label={LABEL}={project}"
    ids = runner(["docker", "ps", "-aq", "--filter", label]).stdout.split()
    if ids:
        _check(runner(["docker", "rm", "-f", *ids]))
    nets = runner(["docker", "network", "ls", "-q", "--filter", label]).stdout.split()
    if nets:
        _check(runner(["docker", "network", "rm", *nets]))
    if volumes:
        vols = runner(["docker", "volume", "ls", "-q", "--filter", label]).stdout.split()
        if vols:
            _check(runner(["docker", "volume", "rm", *vols]))


def _check(proc: subprocess.CompletedProcess[str]) -> None:
    if proc.returncode != 0:
        args = proc.args if isinstance(proc.args, list) else [str(proc.args)]
        raise RuntimeError(f"{shlex.join(args)[:300]} failed: {proc.stderr.strip()[-800:]}")
