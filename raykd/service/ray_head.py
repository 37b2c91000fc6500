"""The service's own Ray head, when no ``RAYKD_RAY_ADDRESS`` is given.

With no ``RAYKD_RAY_ADDRESS`` the service starts and owns a local Ray head (a
``ray start --head --block`` child on loopback, stopped with the service). That head always
runs with Ray's token authentication (``RAY_AUTH_MODE=token``) whatever the service's own
environment says: Ray's GCS and raylets listen on every interface, and an unauthenticated
job API runs arbitrary code for anyone who reaches it. Its token is ``RAYKD_RAY_TOKEN`` or
one generated once and kept (0600) at ``<storage>/.service/ray_token``; the jobs it runs
inherit it, so their drivers join the head with the same token.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger("raykd.service")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# What the owned head (and so every Ray worker and driver it starts) may inherit from the
# service's environment. Everything else stays in the service process: above all its own
# secrets (RAYKD_TOKEN, RAYKD_USERS, RAYKD_RAY_TOKEN, RAYKD_DATABASE_URL) and RAY_AUTH_TOKEN
# (the head reads its token from RAY_AUTH_TOKEN_PATH).
HEAD_ENV_NAMES = frozenset({
    "PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "TZ", "TERM",
    "TMPDIR", "TMP", "TEMP", "PYTHONPATH", "PYTHONHOME", "PYTHONUNBUFFERED", "VIRTUAL_ENV",
    "CONDA_PREFIX", "LD_LIBRARY_PATH", "XDG_CACHE_HOME", "TORCH_HOME", "HF_HOME",
    "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy",
    "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE",
    # what raykd's drivers read (the scheduler also passes these per job in runtime_env)
    "RAYKD_MODEL_ALLOWLIST", "RAYKD_DEBUG", "RAYKD_TEST",
})
HEAD_ENV_PREFIXES = ("LC_", "RAY_", "OMP_", "MKL_", "OPENBLAS_", "NUMEXPR_", "KMP_", "CUDA_",
                     "NVIDIA_", "NCCL_", "GLOO_", "TORCH_")
HEAD_ENV_NEVER = frozenset({"RAY_AUTH_TOKEN"})


def head_env(environ: Mapping[str, str], *, token_path: Path) -> dict[str, str]:
    """The owned head's environment: ``environ`` filtered by an allowlist, plus Ray's token auth.

    Only the names in :data:`HEAD_ENV_NAMES` and those starting with one of
    :data:`HEAD_ENV_PREFIXES` pass (never :data:`HEAD_ENV_NEVER`): no ``RAYKD_*`` secret
    reaches a Ray worker or driver. The service's own interpreter's directory comes first
    on ``PATH``, so the head's drivers find the same ``raykd`` as the service.
    """
    env = {k: v for k, v in environ.items()
           if (k in HEAD_ENV_NAMES or k.startswith(HEAD_ENV_PREFIXES)) and k not in HEAD_ENV_NEVER}
    bin_dir = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join([bin_dir, *(p for p in env.get("PATH", "").split(os.pathsep)
                                              if p and p != bin_dir)])
    # a clean stop of the service ends its jobs anyway: no 30 s drain of the node first
    env.setdefault("RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S", "0")
    return env | {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token_path)}


def process_start_marker(pid: int) -> str | None:
    """When process ``pid`` started (boot id and start tick from ``/proc``): it tells a live head
    from another process that got its pid later. None where ``/proc`` cannot say (no such pid,
    not Linux)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None
    fields = stat.rpartition(")")[2].split()
    return f"{boot}:{fields[19]}" if len(fields) > 19 else None


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, dead but not yet reaped, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's: alive
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        return True  # no /proc (not Linux): the signal said it exists
    return state not in ("Z", "X")


HEAD_FILE = "head.json"


class OwnedHead:
    """A local Ray head owned by the service (loopback dashboard, token auth), kept across restarts.

    :meth:`start` runs ``ray start --head --block`` in a session of its own (so a crash of
    the service leaves it and its jobs running) and records its address, ports, pid and
    start marker in ``<service dir>/head.json`` (0600). :meth:`attach` finds that head
    again after a restart of the service: alive, the same process (start marker), and
    answering the service's token. :meth:`stop` (a clean stop of the service) stops it and
    every job on it, and removes the record.
    """

    def __init__(self, *, pid: int, pgid: int, address: str, temp_dir: Path, service_dir: Path,
                 ports: dict[str, int] | None = None, proc: subprocess.Popen[bytes] | None = None) -> None:
        self.pid, self.pgid, self.address, self.temp_dir = pid, pgid, address, temp_dir
        self.service_dir, self.ports, self.proc = service_dir, ports or {}, proc
        self.dashboard_port = int(address.rsplit(":", 1)[1])
        self.log_path = service_dir / "ray-head.log"

    @classmethod
    def start(cls, *, num_cpus: int | None, temp_dir: Path, token_path: Path) -> OwnedHead:
        """Start a new head (not yet answering: see :meth:`wait_ready`)."""
        dashboard_port, gcs_port = _free_port(), _free_port()
        ray = str(Path(sys.executable).parent / "ray")
        ray = ray if os.path.exists(ray) else (shutil.which("ray") or ray)
        cmd = [ray, "start", "--head", "--block", f"--port={gcs_port}", "--dashboard-host=127.0.0.1",
               f"--dashboard-port={dashboard_port}", "--disable-usage-stats",
               f"--temp-dir={temp_dir}", f"--dashboard-agent-listen-port={_free_port()}",
               f"--ray-client-server-port={_free_port()}"]
        if num_cpus:
            cmd.append(f"--num-cpus={num_cpus}")
        temp_dir.mkdir(parents=True, exist_ok=True)
        with open(token_path.parent / "ray-head.log", "ab") as log:  # the child keeps its own fd
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                    env=head_env(os.environ, token_path=token_path),
                                    start_new_session=True)
        return cls(pid=proc.pid, pgid=proc.pid, address=f"http://127.0.0.1:{dashboard_port}",
                   temp_dir=temp_dir, service_dir=token_path.parent,
                   ports={"dashboard": dashboard_port, "gcs": gcs_port}, proc=proc)

    def save(self) -> None:
        """Record this head in ``head.json`` (0600, atomically) for :meth:`attach`."""
        record = {"address": self.address, "pid": self.pid, "pgid": self.pgid,
                  "start_marker": process_start_marker(self.pid), "temp_dir": str(self.temp_dir),
                  "ports": self.ports, "started_at": time.time()}
        write_private(self.service_dir / HEAD_FILE, json.dumps(record, indent=1))

    @classmethod
    def attach(cls, service_dir: Path, token: str, answer_timeout_s: float = 30.0) -> OwnedHead | None:
        """The head recorded in ``service_dir/head.json`` if it still runs and answers ``token``.

        None when there is no record or its process is gone (the record is removed). A live
        process of that record that refuses ``token`` (the token was changed) is stopped: its
        jobs could never be followed again. A live process that gives no such answer within
        ``answer_timeout_s`` (errors of its own, or silence) is left running and the service
        does not start (RuntimeError): killing it on a guess would kill every job on it.
        """
        path = service_dir / HEAD_FILE
        try:
            record = json.loads(path.read_text())
            pid, address = int(record["pid"]), str(record["address"])
            head = cls(pid=pid, pgid=int(record.get("pgid", pid)), address=address,
                       temp_dir=Path(record["temp_dir"]), service_dir=service_dir,
                       ports={str(k): int(v) for k, v in (record.get("ports") or {}).items()})
        except (OSError, ValueError, KeyError, TypeError):
            path.unlink(missing_ok=True)
            return None
        marker = record.get("start_marker")
        if not _alive(pid) or (marker is not None and process_start_marker(pid) != marker):
            path.unlink(missing_ok=True)
            return None
        answer = head.answers(token, timeout_s=answer_timeout_s)
        if answer is None:  # alive but silent (busy, restarting): never kill its jobs on a guess
            raise RuntimeError(
                f"the Ray head recorded in {path} (pid {pid}, {address}) is alive but did not answer "
                f"within {answer_timeout_s:g} s; start the service again once it answers, or stop that head "
                f"(kill {pid}) and remove {path} to start a new one")
        if answer:
            return head
        log.warning("the Ray head recorded in %s (pid %d) does not accept the service's Ray "
                    "token; stopping it and starting a new one", path, pid)
        head.stop()
        return None

    def answers(self, token: str, timeout_s: float = 30.0) -> bool | None:
        """Whether the head's job API accepts ``token``: True (200), False (401/403: refused),
        None (no such answer within ``timeout_s``: unreachable, or only errors of its own)."""
        import urllib.error
        import urllib.request

        request = urllib.request.Request(f"{self.address}/api/jobs/",
                                         headers={"Authorization": f"Bearer {token}"})
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and _alive(self.pid):
            try:
                with urllib.request.urlopen(request, timeout=5) as response:
                    return bool(response.status == 200)
            except urllib.error.HTTPError as err:
                if err.code in (401, 403):
                    return False  # it answered, and refused the token
                time.sleep(0.5)  # an error of its own (5xx while its dashboard restarts): ask again
            except OSError:
                time.sleep(0.5)  # restarting its dashboard, or busy
        return None if _alive(self.pid) else False

    def wait_ready(self, timeout_s: float = 90.0) -> None:
        import urllib.error
        import urllib.request

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not _alive(self.pid) or (self.proc is not None and self.proc.poll() is not None):
                code = self.proc.returncode if self.proc is not None else None
                raise RuntimeError(f"the local Ray head exited with code {code}; see {self.log_path}")
            try:
                with urllib.request.urlopen(f"{self.address}/api/version", timeout=2):
                    return
            except urllib.error.HTTPError:
                return  # it answers (401 before the token is checked is still an answer)
            except OSError:
                time.sleep(0.5)
        raise RuntimeError(f"the local Ray head did not answer within {timeout_s:g} s; see {self.log_path}")

    def stop(self) -> None:
        """Stop the head and everything it started (:func:`stop_ray_start`); forget it."""
        stop_ray_start(self.pid, self.pgid, proc=self.proc)
        (self.service_dir / HEAD_FILE).unlink(missing_ok=True)


def stop_ray_start(pid: int, pgid: int, *, proc: subprocess.Popen[Any] | None = None,
                   grace_s: float = 30.0, group_grace_s: float = 5.0) -> None:
    """Stop a ``ray start --block`` (``pid``, our child ``proc`` when it is one) and its node.

    SIGTERM goes to ``ray start`` alone, which stops its node in seconds; the same signal to
    the whole group stops the GCS under it first, and ``ray start`` then never exits by
    itself. What is left of the group ``pgid`` after ``group_grace_s`` is killed (also when
    ``ray start`` had exited by itself). A child reaped before this call is not signalled: its
    pid may name another process now, and so may its group's number once no member is left
    (a live process numbered ``pgid`` then is another's, and the group is left alone).
    """
    reaped = proc is not None and proc.poll() is not None
    gone = reaped or (proc is None and not _alive(pid))  # ray start ended before this call
    if not reaped and _alive(pid):
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        _wait(pid, grace_s, proc)
    if gone and _alive(pgid):
        return  # the number was given again: while a member lived, no process could take it
    if not _wait_group(pgid, group_grace_s):
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        if not reaped:
            _wait(pid, 10.0, proc)


def _wait(pid: int, timeout_s: float, proc: subprocess.Popen[Any] | None) -> bool:
    """Wait until ``pid`` exits (our child ``proc``: until it is reaped, whatever its pid names
    afterwards); whether it did."""
    if proc is not None:
        try:
            proc.wait(timeout=timeout_s)
            return True
        except subprocess.TimeoutExpired:
            return False
    deadline = time.monotonic() + timeout_s
    while _alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def _wait_group(pgid: int, timeout_s: float) -> bool:
    """Wait until no process of the group ``pgid`` is left; whether none is."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.2)
    return False


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` (0600) atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def owned_head_token(path: Path, given: str | None) -> str:
    """The owned head's token: ``given`` (RAYKD_RAY_TOKEN), else the one kept at ``path``.

    Written to ``path`` (0600, atomically) either way: the head reads it from there.
    """
    if given is None and path.is_file():
        return path.read_text().strip()
    token = given or secrets.token_hex(32)
    write_private(path, token)
    return token
