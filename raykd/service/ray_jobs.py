"""The service's view of Ray: submit ``raykd run`` through the Job Submission SDK, ask, stop.

Every job is submitted with ``submission_id = <job id>`` (``<job id>.r<n>`` for the n-th
retry: Ray keeps one record per submission id), and the entrypoint is what
``ray job submit -- raykd run SPEC --job-id ID`` runs: on the service's own head with the
service's interpreter (``<python> -m raykd run ...``, so a venv that is not activated
works), on an external cluster with ``RAYKD_DRIVER_COMMAND`` (default ``raykd``). The Ray
job's metadata names the raykd job and its owner (``raykd_job_id``, ``raykd_owner``).
Every request to Ray has a deadline (``RAYKD_RAY_TIMEOUT_S``). Towards Ray the service uses Ray's
own authentication: ``RAYKD_RAY_TOKEN`` (or Ray's ``RAY_AUTH_TOKEN``/token file) as its
bearer token; it never invents a second scheme.

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
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any

RAY_TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}
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
        """Stop the head and everything it started; forget it.

        SIGTERM goes to ``ray start`` alone, which stops its node in seconds (the same
        signal to the whole group stops the GCS under it first); what is left of the
        group 5 s later is killed.
        """
        if _alive(self.pid):
            try:
                os.kill(self.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            self._wait(self.pid, 30.0)
        if not self._wait_group(5.0):
            try:
                os.killpg(self.pgid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self._wait(self.pid, 10.0)
        (self.service_dir / HEAD_FILE).unlink(missing_ok=True)

    def _wait(self, pid: int, timeout_s: float) -> bool:
        """Wait until ``pid`` exits (reaping it when it is our child); whether it did."""
        deadline = time.monotonic() + timeout_s
        while _alive(pid):
            if time.monotonic() > deadline:
                return False
            if self.proc is not None:
                try:
                    self.proc.wait(timeout=0.2)
                except subprocess.TimeoutExpired:
                    pass
            else:
                time.sleep(0.2)
        return True

    def _wait_group(self, timeout_s: float) -> bool:
        """Wait until no process of the head's process group is left; whether none is."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                os.killpg(self.pgid, 0)
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


class RayUnavailable(Exception):
    """Ray's job API cannot be reached, or answered with an error of its own (the API answers 503)."""


class RayRefused(Exception):
    """Ray answered and refused this request for good (HTTP 4xx, e.g. a submission id it has)."""


def _http_status(err: Exception) -> int | None:
    """The HTTP status in the SDK's ``RuntimeError("Request failed with status code N: ...")``."""
    found = re.search(r"status code (\d{3})", str(err))
    return int(found.group(1)) if found else None


def _first_line(err: Exception) -> str:
    """The line of an SDK error worth showing: the first, or a traceback's last (its message)."""
    text = str(err)
    lines = [line.strip() for line in text.splitlines() if line.strip(" .")]
    return (lines or [""])[-1 if "Traceback" in text else 0][:300]


class RayJobs:
    """Submit, inspect and stop raykd jobs on a Ray cluster's job API.

    Every request to Ray has a deadline (``timeout_s``): the SDK's HTTP calls get it as
    ``requests``' timeout, so a Ray that accepts connections and never answers costs a
    caller ``timeout_s`` at most. After such a timeout Ray is left alone for a few seconds
    (calls fail at once), and at most ``max_inflight`` requests wait on Ray at a time (the
    next ones fail after a second): a hung Ray cannot tie up the API's worker threads.

    Errors: :class:`RayUnavailable` when Ray cannot be reached (or fails on its side:
    try again later), :class:`RayRefused` when it answered that this request is wrong.
    """

    def __init__(self, address: str, *, token: str | None = None, timeout_s: float = 20.0,
                 driver_command: str = "raykd", max_inflight: int = 4) -> None:
        self.address = address
        self.timeout_s = timeout_s
        self.driver_command = driver_command  # what runs `run SPEC --job-id ID` on the cluster
        self._headers = {"Authorization": f"Bearer {token}"} if token else None
        self._client: Any = None
        self._slots = threading.BoundedSemaphore(max_inflight)
        self._quiet_until = 0.0  # after a timeout: no request to Ray before this (monotonic) time

    def __repr__(self) -> str:  # never shows the token
        return f"RayJobs({self.address!r})"

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = _timed_client(self.timeout_s)(self.address, headers=self._headers)
        return self._client

    def _call(self, what: str, call: Callable[[Any], Any]) -> Any:
        """``call(client)`` under the deadline rules (see the class docstring)."""
        if time.monotonic() < self._quiet_until:
            raise RayUnavailable(f"Ray at {self.address} did not answer within {self.timeout_s:g} s "
                                 f"a moment ago; the {what} request was not sent (try again shortly)")
        if not self._slots.acquire(timeout=0.25):  # a short wait: a waiting caller holds an API thread
            raise RayUnavailable(f"Ray at {self.address} is slow: requests to it are already waiting; "
                                 f"the {what} request was not sent (try again shortly)")
        try:
            return call(self.client)
        except Exception as err:
            if _is_timeout(err):
                self._quiet_until = time.monotonic() + min(5.0, self.timeout_s)
            raise
        finally:
            self._slots.release()

    def _unavailable(self, err: Exception, what: str) -> RayUnavailable:
        self._client = None  # build a fresh client (and check the connection) next time
        if isinstance(err, RayUnavailable):
            return err
        late = f" within {self.timeout_s:g} s" if _is_timeout(err) else ""
        return RayUnavailable(f"Ray at {self.address} did not answer the {what} request{late} "
                              f"({type(err).__name__}); try again once Ray is back")

    def ping(self, timeout_s: float = 1.5) -> bool:
        """Whether Ray's job API answers (with our token) within ``timeout_s``; never waits longer."""
        if time.monotonic() < self._quiet_until:
            return False
        import requests

        try:
            r = requests.get(f"{self.address}/api/version", headers=self._headers,
                             timeout=(timeout_s / 2, timeout_s / 2))
            return r.status_code == 200
        except Exception:  # noqa: BLE001 - unreachable, for whatever reason
            return False

    def submit(self, *, submission_id: str, spec_path: Path, job_id: str, env: dict[str, str],
               owner: str | None = None) -> str:
        """Start ``<driver_command> run SPEC --job-id ID`` on the cluster; returns the submission id.

        The Ray job's metadata names the raykd job and its owner (``ray job list`` shows them).

        Raises:
            RayRefused: Ray answered 4xx (other than 401/403): this submission never will be
                accepted as it is (e.g. Ray already has a job with this submission id).
            RayUnavailable: Ray is unreachable, or failed on its side (5xx, auth): retry later.
        """
        entrypoint = (f"{self.driver_command} run {shlex.quote(str(spec_path))} "
                      f"--job-id {shlex.quote(job_id)}")
        metadata = {"raykd_job_id": job_id, **({"raykd_owner": owner} if owner else {})}
        try:
            return str(self._call("submit", lambda c: c.submit_job(
                entrypoint=entrypoint, submission_id=submission_id, metadata=metadata,
                runtime_env={"env_vars": env})))
        except RuntimeError as err:  # Ray answered with an error status
            code = _http_status(err)
            if code is not None and 400 <= code < 500 and code not in (401, 403):
                raise RayRefused(_first_line(err)) from err
            raise RayUnavailable(f"Ray at {self.address} could not take the submission now: "
                                 f"{_first_line(err)}") from err
        except Exception as err:  # noqa: BLE001 - unreachable (connection refused, timeout, ...)
            raise self._unavailable(err, "submit") from err

    def status(self, submission_id: str) -> str | None:
        """Ray's status name (PENDING, RUNNING, SUCCEEDED, FAILED, STOPPED), None if unknown to Ray.

        Raises:
            RayUnavailable: Ray is unreachable or answered with another error.
        """
        try:
            return str(self._call("status", lambda c: c.get_job_status(submission_id)).value)
        except RuntimeError as err:  # Ray: "Job ... does not exist"
            if "does not exist" in str(err):
                return None
            raise RayUnavailable(f"Ray at {self.address} could not tell the status of "
                                 f"{submission_id!r}: {_first_line(err)}") from err
        except Exception as err:  # noqa: BLE001 - unreachable
            raise self._unavailable(err, "status") from err

    def info(self, submission_id: str) -> Any:
        """Ray's JobDetails of ``submission_id`` (message, metadata, ...)."""
        try:
            return self._call("info", lambda c: c.get_job_info(submission_id))
        except RuntimeError:
            raise
        except Exception as err:  # noqa: BLE001 - unreachable
            raise self._unavailable(err, "info") from err

    def stop(self, submission_id: str) -> bool:
        """Ask Ray to stop the submission (SIGTERM); False when Ray has no such live job.

        Raises:
            RayUnavailable: Ray is unreachable: the stop was not sent.
        """
        try:
            return bool(self._call("stop", lambda c: c.stop_job(submission_id)))
        except RuntimeError:  # no such job, or already ended
            return False
        except Exception as err:  # noqa: BLE001 - unreachable
            raise self._unavailable(err, "stop") from err

    def delete(self, submission_id: str) -> bool:
        """Forget a terminal submission in Ray (so its id can be submitted again).

        False when Ray refused (no such job, or not terminal). Ray keeps the log files.

        Raises:
            RayUnavailable: Ray is unreachable.
        """
        try:
            return bool(self._call("delete", lambda c: c.delete_job(submission_id)))
        except RuntimeError:
            return False
        except Exception as err:  # noqa: BLE001 - unreachable
            raise self._unavailable(err, "delete") from err

    def logs(self, submission_id: str) -> str:
        """The driver's log ("" for a submission Ray does not know); RayUnavailable if Ray is down."""
        try:
            return str(self._call("log", lambda c: c.get_job_logs(submission_id)))
        except RuntimeError as err:  # Ray answered: no such job, or an error of its own
            if "does not exist" in str(err):
                return ""
            raise RayUnavailable(f"Ray at {self.address} refused the log request: "
                                 f"{str(err).splitlines()[0][:200]}") from err
        except Exception as err:  # noqa: BLE001 - unreachable (connection refused, timeout, ...)
            raise self._unavailable(err, "log") from err

    async def tail(self, submission_id: str) -> AsyncIterator[str]:
        """The driver's log through Ray's tail API (one websocket, not a request per poll).

        Yields what the log holds so far, then each new piece as the driver writes it, and
        ends when the job ends.

        Raises:
            RayUnavailable: Ray cannot be reached, or the stream broke before the job ended.
        """
        import asyncio

        client = await asyncio.to_thread(self._call, "log", lambda c: c)
        try:
            async for chunk in client.tail_job_logs(submission_id):
                yield str(chunk)
        except Exception as err:  # noqa: BLE001 - unreachable, or the stream broke
            raise RayUnavailable(f"Ray at {self.address} stopped streaming the log of "
                                 f"{submission_id!r} ({type(err).__name__})") from err


def _is_timeout(err: BaseException) -> bool:
    """Whether ``err`` (or what caused it) is an HTTP timeout of ``requests``."""
    import requests

    while err is not None:
        if isinstance(err, requests.exceptions.Timeout | TimeoutError):
            return True
        err = err.__cause__ or err.__context__  # type: ignore[assignment]
    return False


def _timed_client(timeout_s: float) -> Any:
    """Ray's ``JobSubmissionClient`` whose every HTTP request has ``timeout_s`` as its timeout.

    The SDK forwards extra keyword arguments of ``_do_request`` to ``requests.request`` but
    passes no timeout itself (a Ray that never answers would block forever), including in
    the version checks its constructor makes.
    """
    from ray.job_submission import JobSubmissionClient

    class TimedJobSubmissionClient(JobSubmissionClient):
        def _do_request(self, method: str, endpoint: str, **kwargs: Any) -> Any:
            kwargs.setdefault("timeout", timeout_s)
            return super()._do_request(method, endpoint, **kwargs)

    return TimedJobSubmissionClient
