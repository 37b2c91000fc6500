"""The service's view of Ray: submit ``raykd run`` through the Job Submission SDK, ask, stop.

Every job is submitted with ``submission_id = <job id>`` (``<job id>.r<n>`` for the n-th
retry: Ray keeps one record per submission id), and the entrypoint is exactly what
``ray job submit -- raykd run SPEC --job-id ID`` runs. Towards Ray the service uses Ray's
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

import os
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

RAY_TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class OwnedHead:
    """A local Ray head owned by the service process (loopback dashboard, stopped with it)."""

    def __init__(self, *, num_cpus: int | None, temp_dir: Path, token_path: Path) -> None:
        self.dashboard_port = _free_port()
        gcs_port = _free_port()
        ray = shutil.which("ray") or str(Path(sys.executable).parent / "ray")
        cmd = [ray, "start", "--head", "--block", f"--port={gcs_port}", "--dashboard-host=127.0.0.1",
               f"--dashboard-port={self.dashboard_port}", "--disable-usage-stats",
               f"--temp-dir={temp_dir}", f"--dashboard-agent-listen-port={_free_port()}",
               f"--ray-client-server-port={_free_port()}"]
        if num_cpus:
            cmd.append(f"--num-cpus={num_cpus}")
        temp_dir.mkdir(parents=True, exist_ok=True)
        self.log = open(token_path.parent / "ray-head.log", "ab")  # noqa: SIM115 - lives with the head
        env = {k: v for k, v in os.environ.items() if k != "RAY_AUTH_TOKEN"}
        env |= {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token_path)}
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, env=env,
                                     start_new_session=True)
        self.address = f"http://127.0.0.1:{self.dashboard_port}"

    def wait_ready(self, timeout_s: float = 90.0) -> None:
        import urllib.error
        import urllib.request

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the local Ray head exited with code {self.proc.returncode}; "
                                   f"see {self.log.name}")
            try:
                with urllib.request.urlopen(f"{self.address}/api/version", timeout=2):
                    return
            except urllib.error.HTTPError:
                return  # it answers (401 before the token is checked is still an answer)
            except OSError:
                time.sleep(0.5)
        raise RuntimeError(f"the local Ray head did not answer within {timeout_s:g} s; see {self.log.name}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
        self.log.close()


def owned_head_token(path: Path, given: str | None) -> str:
    """The owned head's token: ``given`` (RAYKD_RAY_TOKEN), else the one kept at ``path``.

    Written to ``path`` (0600, atomically) either way: the head reads it from there.
    """
    if given is None and path.is_file():
        return path.read_text().strip()
    token = given or secrets.token_hex(32)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token)
    os.replace(tmp, path)
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

    Errors: :class:`RayUnavailable` when Ray cannot be reached (or fails on its side:
    try again later), :class:`RayRefused` when it answered that this request is wrong.
    """

    def __init__(self, address: str, *, token: str | None = None) -> None:
        self.address = address
        self._headers = {"Authorization": f"Bearer {token}"} if token else None
        self._client: Any = None

    def __repr__(self) -> str:  # never shows the token
        return f"RayJobs({self.address!r})"

    @property
    def client(self) -> Any:
        if self._client is None:
            from ray.job_submission import JobSubmissionClient

            self._client = JobSubmissionClient(self.address, headers=self._headers)
        return self._client

    def _unavailable(self, err: Exception, what: str) -> RayUnavailable:
        self._client = None  # build a fresh client (and check the connection) next time
        return RayUnavailable(f"Ray at {self.address} did not answer the {what} request "
                              f"({type(err).__name__}); try again once Ray is back")

    def ping(self) -> bool:
        try:
            self.client.list_jobs()
            return True
        except Exception:  # noqa: BLE001 - unreachable, for whatever reason
            self._client = None
            return False

    def submit(self, *, submission_id: str, spec_path: Path, job_id: str, env: dict[str, str]) -> str:
        """Start ``raykd run SPEC --job-id ID`` on the cluster; returns the submission id.

        Raises:
            RayRefused: Ray answered 4xx (other than 401/403): this submission never will be
                accepted as it is (e.g. Ray already has a job with this submission id).
            RayUnavailable: Ray is unreachable, or failed on its side (5xx, auth): retry later.
        """
        entrypoint = f"raykd run {shlex.quote(str(spec_path))} --job-id {shlex.quote(job_id)}"
        try:
            return str(self.client.submit_job(entrypoint=entrypoint, submission_id=submission_id,
                                              runtime_env={"env_vars": env}))
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
            return str(self.client.get_job_status(submission_id).value)
        except RuntimeError as err:  # Ray: "Job ... does not exist"
            if "does not exist" in str(err):
                return None
            raise RayUnavailable(f"Ray at {self.address} could not tell the status of "
                                 f"{submission_id!r}: {_first_line(err)}") from err
        except Exception as err:  # noqa: BLE001 - unreachable
            raise self._unavailable(err, "status") from err

    def info(self, submission_id: str) -> Any:
        return self.client.get_job_info(submission_id)

    def stop(self, submission_id: str) -> bool:
        """Ask Ray to stop the submission (SIGTERM); False when Ray has no such live job.

        Raises:
            RayUnavailable: Ray is unreachable: the stop was not sent.
        """
        try:
            return bool(self.client.stop_job(submission_id))
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
            return bool(self.client.delete_job(submission_id))
        except RuntimeError:
            return False
        except Exception as err:  # noqa: BLE001 - unreachable
            raise self._unavailable(err, "delete") from err

    def logs(self, submission_id: str) -> str:
        """The driver's log ("" for a submission Ray does not know); RayUnavailable if Ray is down."""
        try:
            return str(self.client.get_job_logs(submission_id))
        except RuntimeError as err:  # Ray answered: no such job, or an error of its own
            if "does not exist" in str(err):
                return ""
            raise RayUnavailable(f"Ray at {self.address} refused the log request: "
                                 f"{str(err).splitlines()[0][:200]}") from err
        except Exception as err:  # noqa: BLE001 - unreachable (connection refused, timeout, ...)
            self._client = None
            raise RayUnavailable(f"Ray at {self.address} did not answer ({type(err).__name__}); "
                                 "the log is served again once Ray is back") from err
