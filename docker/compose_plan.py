"""docker/compose.yaml as a plan: the containers its services become, fully resolved.

The subset of the Compose specification that raykd's compose files use, read the way Compose
v2 reads it, so that ``launch.py`` starts the very services of the file (no second copy):

- YAML anchors and merge keys; several files (``-f a -f b``): mappings merge key by key,
  a service's ``volumes`` by target path, anything else in a later file replaces the
  earlier value;
- interpolation from the environment, then ``docker/.env`` (the environment wins):
  ``$VAR``, ``${VAR}``, ``${VAR:-default}``, ``${VAR-default}``, ``${VAR:?error}``,
  ``${VAR?error}``, ``${VAR:+alt}``, ``${VAR+alt}``, and ``$$`` for a literal ``$``;
  only the services being started (and the top level) are interpolated;
- ``profiles`` (a service with profiles runs only when one of them is active, or when it
  is named), ``depends_on`` (list or mapping; ``required: false``), ``deploy.replicas``
  (``scale`` overrides), ``deploy.resources`` (memory/cpus limits, NVIDIA GPUs);
- containers are named ``<project>-<service>-<n>``, volumes ``<project>_<volume>`` and
  networks ``<project>_<network>``, as Compose names them (``COMPOSE_PROJECT_NAME``
  overrides the file's ``name:``).

A service key outside that subset raises :class:`PlanError` naming it: the launcher never
silently drops part of the file.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

SERVICE_KEYS = frozenset({
    "image", "build", "entrypoint", "command", "environment", "volumes", "ports", "hostname",
    "networks", "shm_size", "init", "security_opt", "cap_drop", "cap_add", "deploy",
    "healthcheck", "depends_on", "restart", "profiles", "user", "working_dir",
})
_VAR = re.compile(r"\$(?:(?P<dollar>\$)|\{(?P<braced>[^}]*)\}|(?P<named>[A-Za-z_][A-Za-z0-9_]*))")
_BRACED = re.compile(r"(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>.*))?", re.S)


class PlanError(ValueError):
    """The compose file asks for something this launcher does not do, or a variable is missing."""


def read_env_file(path: Path) -> dict[str, str]:
    """``KEY=VALUE`` lines (``#`` comments, optional quotes, ``export`` prefix), as Compose reads .env."""
    out: dict[str, str] = {}
    if not path.is_file():
        return out
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.removeprefix("export ").partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        elif " #" in value:
            value = value.split(" #", 1)[0].rstrip()
        out[key.strip()] = value
    return out


def interpolate(value: Any, env: Mapping[str, str], where: str = "") -> Any:
    """``value`` with every ``$`` expression replaced (strings inside lists and mappings too)."""
    if isinstance(value, dict):
        return {k: interpolate(v, env, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env, where) for v in value]
    if not isinstance(value, str):
        return value

    def one(m: re.Match[str]) -> str:
        if m.group("dollar"):
            return "$"
        if m.group("named"):
            return env.get(m.group("named"), "")
        braced = _BRACED.fullmatch(m.group("braced"))
        if braced is None:
            raise PlanError(f"{where}: cannot read ${{{m.group('braced')}}}")
        name, op, arg = braced.group("name"), braced.group("op"), braced.group("arg") or ""
        have, val = name in env, env.get(name, "")
        unset = not have or (op is not None and op.startswith(":") and val == "")
        if op in ("-", ":-"):
            return arg if unset else val
        if op in ("?", ":?"):
            if unset:
                raise PlanError(f"{where}: {name} is required: {arg or 'set it'}")
            return val
        if op in ("+", ":+"):
            return "" if unset else arg
        return val

    return _VAR.sub(one, value)


def _target(mount: Any) -> str:
    """The container path of a service's volume entry (short ``src:dst[:mode]`` or long form)."""
    if isinstance(mount, dict):
        return str(mount.get("target", ""))
    parts = str(mount).split(":")
    return parts[1] if len(parts) > 1 else parts[0]


def merge(base: Any, over: Any, key: str = "") -> Any:
    """``over`` on ``base``: mappings merge key by key; a service's ``volumes`` merge by
    target path (as Compose does: a later file's mount replaces one at the same path, the
    others are kept); anything else: ``over`` wins."""
    if isinstance(base, dict) and isinstance(over, dict):
        out = dict(base)
        for k, v in over.items():
            out[k] = merge(base[k], v, k) if k in base else v
        return out
    if key == "volumes" and isinstance(base, list) and isinstance(over, list):
        replaced = {_target(m) for m in over}
        return [m for m in base if _target(m) not in replaced] + list(over)
    return over


@dataclass(frozen=True)
class Mount:
    source: str  # a named volume (already <project>_<name>) or an absolute host path
    target: str
    named: bool
    read_only: bool = False


@dataclass(frozen=True)
class Port:
    host_ip: str
    host_port: int | None
    container_port: int


@dataclass(frozen=True)
class Health:
    test: list[str]  # argv (CMD) or ["sh", "-c", text] (CMD-SHELL)
    interval: str = "30s"
    timeout: str = "30s"
    retries: int = 3
    start_period: str = "0s"


@dataclass
class Container:
    """One container of a service (one replica)."""

    service: str
    index: int
    name: str
    image: str
    entrypoint: list[str] | None
    command: list[str] | None
    environment: dict[str, str]
    mounts: list[Mount]
    ports: list[Port]
    networks: list[str]
    hostname: str | None = None
    health: Health | None = None
    depends_on: dict[str, str] = field(default_factory=dict)  # service -> condition
    options: dict[str, Any] = field(default_factory=dict)     # the rest, by compose key

    def argv(self) -> list[str]:
        """What the container runs: entrypoint then command (compose's override rules)."""
        return [*(self.entrypoint or []), *(self.command or [])]


@dataclass(frozen=True)
class Build:
    image: str
    context: Path
    dockerfile: Path
    args: dict[str, str]


@dataclass
class Plan:
    project: str
    containers: list[Container]  # in start order: every container after those it depends on
    volumes: list[str]            # <project>_<name>
    networks: list[str]           # <project>_<name>
    builds: list[Build]
    root: Path                    # the first compose file's folder

    def by_service(self, service: str) -> list[Container]:
        return [c for c in self.containers if c.service == service]


def _argv(value: Any) -> list[str] | None:
    if value is None:
        return None
    return shlex.split(value) if isinstance(value, str) else [str(v) for v in value]


def _env(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if isinstance(value, dict):
        return {str(k): "" if v is None else str(v) for k, v in value.items()}
    pairs = (str(item).partition("=") for item in value)
    return {key: val for key, _eq, val in pairs}


def _port(value: Any) -> Port:
    if isinstance(value, dict):
        published = value.get("published")
        return Port(str(value.get("host_ip", "0.0.0.0")), int(published) if published else None,
                    int(value["target"]))
    parts = str(value).split(":")
    if len(parts) == 3:
        return Port(parts[0], int(parts[1]) if parts[1] else None, int(parts[2]))
    if len(parts) == 2:
        return Port("0.0.0.0", int(parts[0]), int(parts[1]))
    return Port("0.0.0.0", None, int(parts[0]))


def _mount(value: Any, project: str, root: Path, volumes: Mapping[str, Any]) -> Mount:
    if isinstance(value, dict):
        source, target, ro = str(value.get("source", "")), str(value["target"]), bool(value.get("read_only"))
    else:
        parts = str(value).split(":")
        source, target, ro = parts[0], parts[1], len(parts) > 2 and "ro" in parts[2].split(",")
    if source.startswith((".", "/", "~")):
        return Mount(str((root / Path(source).expanduser()).resolve()), target, False, ro)
    if source not in volumes:
        raise PlanError(f"volume {source!r} is not declared under the top-level volumes:")
    return Mount(f"{project}_{source}", target, True, ro)


def _health(value: Any) -> Health | None:
    if not value or value.get("disable"):
        return None
    test = value["test"]
    if isinstance(test, str):
        argv = ["sh", "-c", test]
    elif test[0] == "CMD":
        argv = [str(t) for t in test[1:]]
    elif test[0] == "CMD-SHELL":
        argv = ["sh", "-c", str(test[1])]
    else:
        raise PlanError(f"healthcheck test must start with CMD or CMD-SHELL, not {test[0]!r}")
    return Health(argv, str(value.get("interval", "30s")), str(value.get("timeout", "30s")),
                  int(value.get("retries", 3)), str(value.get("start_period", "0s")))


def _depends(value: Any) -> dict[str, tuple[str, bool]]:
    if value is None:
        return {}
    if isinstance(value, list):
        return {str(s): ("service_started", True) for s in value}
    return {str(s): (str(d.get("condition", "service_started")), bool(d.get("required", True)))
            for s, d in value.items()}


def _order(services: dict[str, dict[str, Any]], wanted: list[str]) -> list[str]:
    """``wanted`` and what they depend on (required or present), dependencies first."""
    out: list[str] = []

    def visit(name: str, path: tuple[str, ...]) -> None:
        if name in out:
            return
        if name in path:
            raise PlanError(f"depends_on cycle: {' -> '.join((*path, name))}")
        for dep, (_cond, required) in _depends(services[name].get("depends_on")).items():
            if dep not in services:
                raise PlanError(f"{name} depends on {dep!r}, which is not a service")
            if required or dep in wanted:
                visit(dep, (*path, name))
        out.append(name)

    for name in wanted:
        visit(name, ())
    return out


def load_files(files: list[Path]) -> dict[str, Any]:
    """The compose files, merged (raw: before interpolation)."""
    data: dict[str, Any] = {}
    for path in files:
        doc = yaml.safe_load(path.read_text()) or {}
        if not isinstance(doc, dict):
            raise PlanError(f"{path}: not a compose file (a mapping at the top)")
        data = merge(data, doc)
    return data


def load_plan(files: list[Path], *, environ: Mapping[str, str] | None = None,
              env_file: Path | None = None, profiles: list[str] | None = None,
              services: list[str] | None = None, scale: Mapping[str, int] | None = None) -> Plan:
    """The containers that ``docker compose -f FILES [--profile P] up [SERVICES]`` would start."""
    root = files[0].resolve().parent
    env = {**read_env_file(env_file or root / ".env"), **(os.environ if environ is None else environ)}
    raw = load_files(files)
    all_services: dict[str, dict[str, Any]] = raw.get("services") or {}
    active = set(profiles or [])
    if services:
        unknown = [s for s in services if s not in all_services]
        if unknown:
            raise PlanError(f"no such service: {', '.join(unknown)} (have {', '.join(all_services)})")
        wanted = list(services)
    else:
        wanted = [n for n, s in all_services.items() if not s.get("profiles") or active & set(s["profiles"])]
    order = _order(all_services, wanted)
    project = env.get("COMPOSE_PROJECT_NAME") or str(interpolate(raw.get("name", root.name), env, "name"))
    volumes = interpolate(raw.get("volumes") or {}, env, "volumes")
    networks = interpolate(raw.get("networks") or {}, env, "networks")
    containers: list[Container] = []
    builds: dict[str, Build] = {}
    for name in order:
        svc = interpolate(all_services[name], env, f"services.{name}")
        extra = set(svc) - SERVICE_KEYS
        if extra:
            raise PlanError(f"service {name}: unsupported key(s) {', '.join(sorted(extra))} "
                            f"(launch.py handles {', '.join(sorted(SERVICE_KEYS))})")
        image = str(svc.get("image") or f"{project}-{name}")
        if "build" in svc:
            b = svc["build"] if isinstance(svc["build"], dict) else {"context": svc["build"]}
            context = (root / str(b.get("context", "."))).resolve()
            builds.setdefault(image, Build(image, context, context / str(b.get("dockerfile", "Dockerfile")),
                                           _env(b.get("args"))))
        nets = svc.get("networks") or ["default"]
        nets = list(nets) if isinstance(nets, (list, dict)) else [str(nets)]
        deps = {d: cond for d, (cond, req) in _depends(svc.get("depends_on")).items() if d in order}
        deploy = svc.get("deploy") or {}
        replicas = int((scale or {}).get(name, deploy.get("replicas", 1)))
        options = {k: svc[k] for k in ("shm_size", "init", "security_opt", "cap_drop", "cap_add",
                                       "restart", "user", "working_dir") if k in svc}
        options["resources"] = deploy.get("resources") or {}
        for i in range(1, replicas + 1):
            containers.append(Container(
                service=name, index=i, name=f"{project}-{name}-{i}", image=image,
                entrypoint=_argv(svc.get("entrypoint")), command=_argv(svc.get("command")),
                environment=_env(svc.get("environment")),
                mounts=[_mount(v, project, root, volumes) for v in svc.get("volumes") or []],
                ports=[_port(p) for p in svc.get("ports") or []],
                networks=[f"{project}_{n}" for n in nets], hostname=svc.get("hostname"),
                health=_health(svc.get("healthcheck")), depends_on=deps, options=options))
    used_nets = sorted({n for c in containers for n in c.networks})
    for n in used_nets:
        if n.removeprefix(f"{project}_") not in networks and n != f"{project}_default":
            raise PlanError(f"network {n.removeprefix(project + '_')!r} is not declared under networks:")
    used_vols = sorted({m.source for c in containers for m in c.mounts if m.named})
    return Plan(project, containers, used_vols, used_nets, list(builds.values()), root)


def project_name(files: list[Path], environ: Mapping[str, str] | None = None) -> str:
    """The project's name alone (``down`` needs no variable of the file to be set)."""
    env = os.environ if environ is None else environ
    raw = load_files(files)
    return env.get("COMPOSE_PROJECT_NAME") or str(raw.get("name", files[0].resolve().parent.name))
