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

The service's own local head (no ``RAYKD_RAY_ADDRESS``) is :mod:`raykd.service.ray_head`.
"""

from __future__ import annotations

import re
import shlex
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

RAY_TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}


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
