#!/usr/bin/env python3
"""Start docker/compose.yaml's services without Compose v2: plain ``docker run``, or processes.

    python docker/launch.py up [SERVICE ...] [--build] [--scale ray-worker=1] [--profile P]
    python docker/launch.py down [-v]
    python docker/launch.py build
    python docker/launch.py config          # the docker run (or process) command lines

The services, images, commands, environment, volumes and published ports are read from the
compose file(s) (``-f``, default docker/compose.yaml) and ``docker/.env``; nothing is kept
twice (see compose_plan.py for the subset of Compose it reads). ``--mode docker`` starts
containers on a user-defined network; ``--mode processes`` starts the same services as
processes on loopback (see launch_processes.py); ``auto`` (default) takes docker when an
engine answers. Exit status 2 with a one-line message for a file or variable it cannot use.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import compose_plan  # noqa: E402
import launch_docker  # noqa: E402
import launch_processes  # noqa: E402

HERE = Path(__file__).resolve().parent


def default_state(project: str) -> Path:
    """Where the process mode keeps its folders and pids (``RAYKD_LAUNCH_STATE`` overrides)."""
    return Path(os.environ.get("RAYKD_LAUNCH_STATE") or Path(tempfile.gettempdir()) / f"raykd-launch-{project}")


def parse_args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="launch.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("-f", "--file", action="append", type=Path, help="compose file (repeatable)")
    ap.add_argument("--env-file", type=Path, help="default: .env beside the first compose file")
    ap.add_argument("--profile", action="append", default=[], help="activate a profile (repeatable)")
    ap.add_argument("--mode", choices=("auto", "docker", "processes"), default="auto")
    ap.add_argument("--state", type=Path, help="process mode: folder for volumes, logs and pids")
    sub = ap.add_subparsers(dest="action", required=True)
    up = sub.add_parser("up", help="start services (and what they depend on)")
    up.add_argument("services", nargs="*")
    up.add_argument("--build", action="store_true", help="docker build the images first")
    up.add_argument("--scale", action="append", default=[], metavar="SERVICE=N")
    up.add_argument("--timeout", type=float, default=300, help="seconds to wait for each dependency")
    down = sub.add_parser("down", help="stop and remove what up started")
    down.add_argument("-v", "--volumes", action="store_true", help="remove the named volumes too")
    sub.add_parser("build", help="docker build every image that has a build section")
    cfg = sub.add_parser("config", help="print the command line of every container")
    cfg.add_argument("services", nargs="*")
    cfg.add_argument("--scale", action="append", default=[], metavar="SERVICE=N")
    return ap.parse_args(argv)


def _scale(items: list[str]) -> dict[str, int]:
    out = {}
    for item in items:
        name, _, n = item.partition("=")
        if not n.isdigit():
            raise compose_plan.PlanError(f"--scale {item!r}: expected SERVICE=N, e.g. ray-worker=1")
        out[name] = int(n)
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    files = args.file or [HERE / "compose.yaml"]
    if args.action == "down":
        project = compose_plan.project_name(files)
        if args.mode != "processes" and launch_docker.engine_available():
            launch_docker.down(project, volumes=args.volumes)
        launch_processes.down((args.state or default_state(project)).resolve())
        return 0
    try:
        plan = compose_plan.load_plan(files, env_file=args.env_file, profiles=args.profile,
                                      services=getattr(args, "services", None) or None,
                                      scale=_scale(getattr(args, "scale", [])))
    except (compose_plan.PlanError, OSError) as err:
        print(f"launch.py: {err}", file=sys.stderr)
        return 2
    mode = args.mode
    if mode == "auto":
        mode = "docker" if launch_docker.engine_available() else "processes"
    state = (args.state or default_state(plan.project)).resolve()  # children run in their own cwd
    if args.action == "config":
        if mode == "docker":
            for c in plan.containers:
                print(shlex.join(launch_docker.run_argv(plan, c)))
        else:
            for p in launch_processes.plan_processes(plan, state):
                print(f"{p.container.name}: {shlex.join(p.argv)}")
        return 0
    if args.action == "build" or (args.action == "up" and args.build):
        for b in plan.builds:
            print(f"building {b.image}: {shlex.join(launch_docker.build_argv(b))}", flush=True)
            if os.spawnvp(os.P_WAIT, "docker", launch_docker.build_argv(b)) != 0:
                print(f"launch.py: docker build of {b.image} failed", file=sys.stderr)
                return 1
        if args.action == "build":
            return 0
    print(f"launch.py: {mode} mode, project {plan.project}", flush=True)
    try:
        if mode == "docker":
            launch_docker.up(plan, timeout_s=args.timeout)
        else:
            for p in launch_processes.up(plan, state):
                print(f"{p.container.name}: ports {p.ports}; log {p.cwd / 'output.log'}", flush=True)
    except RuntimeError as err:
        print(f"launch.py: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
