"""A small typed client of the raykd control plane (``raykd serve``), for notebooks and pipelines.

Example::

    from raykd import load_spec
    from raykd.client import RaykdClient

    with RaykdClient() as client:                 # RAYKD_URL, RAYKD_TOKEN
        job = client.submit(load_spec("mnist-wkd"), labels={"team": "kd"})
        for event in client.events(job.id):       # typed events, resumed after a drop
            print(event.type)
        print(client.wait(job.id).state)
        client.download_all(job.id, "out/")

Every method returns the models of :mod:`raykd.service.schemas` (or :mod:`raykd.core.events`).
An error answer of the service raises :class:`RaykdAPIError` (status and detail); a service
that cannot be reached raises :class:`RaykdConnectionError` naming the URL. Both are
:class:`raykd.core.errors.UserError`, so the CLI prints them as one line (exit code 2).

The token is sent as ``Authorization: Bearer`` and never appears in a repr, a message or a
log line. Torch-free and Ray-free: importing this module loads httpx and pydantic only.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any, Literal
from urllib.parse import quote

import httpx

from raykd.client_http import (
    API,
    DEFAULT_URL,
    RETRY_STATUS,
    STREAM_READ_S,
    RaykdAPIError,
    RaykdConnectionError,
    RaykdTimeoutError,
    ServiceConnection,
    SSEMessage,
    format_detail,
    iter_sse,
    public_url,
)
from raykd.core.errors import UserError
from raykd.core.events import parse_event
from raykd.core.spec import JobSpec
from raykd.core.states import FINAL_STATES, TERMINAL_EVENTS
from raykd.service.schemas import (
    Artifact,
    JobPage,
    JobPublic,
    MetricPoint,
)

__all__ = [
    "API",
    "DEFAULT_URL",
    "RETRY_STATUS",
    "STREAM_READ_S",
    "RaykdAPIError",
    "RaykdClient",
    "RaykdConnectionError",
    "RaykdTimeoutError",
    "SSEMessage",
    "format_detail",
    "iter_sse",
    "public_url",
]


class RaykdClient(ServiceConnection):
    """Client of one raykd service.

    Args:
        url: Base URL of the service; default ``$RAYKD_URL`` or ``http://127.0.0.1:8000``.
        token: Bearer token; default ``$RAYKD_TOKEN``.
        timeout: Seconds to wait for a connection and for each answer.
        transport: An httpx transport (tests use ``httpx.MockTransport``).
    """

    poll_s: float = 1.0
    """Period of :meth:`wait`."""

    def __repr__(self) -> str:
        token = "set" if self._token else "unset"
        return f"RaykdClient(url={public_url(self.url)!r}, token={token})"

    def __enter__(self) -> RaykdClient:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # --- jobs ---------------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        """``GET /healthz`` (no token needed)."""
        return self._request("GET", "/healthz").json()

    def submit(self, spec: JobSpec | dict[str, Any], *, name: str | None = None,
               priority: int = 0, labels: dict[str, str] | None = None,
               job_id: str | None = None, idempotency_key: str | None = None,
               max_run_s: float | None = None) -> JobPublic:
        """Submit a run or sweep spec; the service validates it again.

        Args:
            spec: A :class:`JobSpec` or its mapping (as in a YAML file).
            name: Display name (default: the spec's name).
            priority: -100..100, higher first among queued jobs.
            labels: Key/value labels to filter by.
            job_id: A client-chosen id; submitting it again returns the same job.
            idempotency_key: Sent as ``Idempotency-Key``: a retried submit returns the
                first job instead of a second one (the same key with another body: 409).
            max_run_s: The job's deadline in seconds on Ray (default: the service's).

        Returns:
            The job (queued, or the existing one for a seen key or id).
        """
        if isinstance(spec, JobSpec):
            spec = spec.model_dump(mode="json", exclude_unset=True)
        body: dict[str, Any] = {"spec": spec, "priority": priority, "labels": labels or {}}
        if name is not None:
            body["name"] = name
        if job_id is not None:
            body["job_id"] = job_id
        if max_run_s is not None:
            body["max_run_s"] = max_run_s
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        response = self._request("POST", f"{API}/jobs", json=body, headers=headers)
        return JobPublic.model_validate(response.json())

    def jobs(self, *, state: str | None = None, name: str | None = None,
             labels: dict[str, str] | None = None, limit: int = 50, cursor: str | None = None,
             order: Literal["desc", "asc"] = "desc") -> JobPage:
        """One page of jobs (newest first by default); filters combine with AND."""
        params: list[tuple[str, str | int]] = [("limit", limit), ("order", order)]
        params += [(k, v) for k, v in (("state", state), ("name", name), ("cursor", cursor)) if v]
        params += [("label", f"{k}={v}") for k, v in (labels or {}).items()]
        return JobPage.model_validate(self._request("GET", f"{API}/jobs", params=params).json())

    def iter_jobs(self, *, state: str | None = None, name: str | None = None,
                  labels: dict[str, str] | None = None, limit: int = 50,
                  order: Literal["desc", "asc"] = "desc") -> Iterator[JobPublic]:
        """Every matching job, page after page (``limit`` is the page size)."""
        cursor = None
        while True:
            page = self.jobs(state=state, name=name, labels=labels, limit=limit, cursor=cursor,
                             order=order)
            yield from page.items
            if not page.next_cursor or not page.items:
                return
            cursor = page.next_cursor

    def get(self, job_id: str) -> JobPublic:
        """One job, with its spec and (when done) its result."""
        return JobPublic.model_validate(self._request("GET", self._job(job_id)).json())

    def set_priority(self, job_id: str, priority: int) -> JobPublic:
        """Change the priority of a queued job (409 once it left the queue)."""
        response = self._request("PATCH", self._job(job_id), json={"priority": priority})
        return JobPublic.model_validate(response.json())

    def cancel(self, job_id: str) -> JobPublic:
        """Cancel a queued or running job."""
        return JobPublic.model_validate(self._request("POST", f"{self._job(job_id)}/cancel").json())

    def delete(self, job_id: str) -> None:
        """Delete a final job and its files (409 unless final)."""
        self._request("DELETE", self._job(job_id))

    def retry(self, job_id: str) -> JobPublic:
        """Queue a failed or cancelled job again (it resumes from its checkpoints)."""
        return JobPublic.model_validate(self._request("POST", f"{self._job(job_id)}/retry").json())

    def metrics(self, job_id: str) -> list[MetricPoint]:
        """Every epoch (or trial report) of the job so far."""
        data = self._request("GET", f"{self._job(job_id)}/metrics").json()
        return [MetricPoint.model_validate(m) for m in data]

    def wait(self, job_id: str, timeout: float | None = None) -> JobPublic:
        """Poll until the job is final; RaykdTimeoutError after ``timeout`` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            job = self.get(job_id)
            if job.state in FINAL_STATES:
                return job
            if deadline is not None and time.monotonic() >= deadline:
                raise RaykdTimeoutError(f"job {job_id} is still {job.state} after {timeout:g} s")
            pause = self.poll_s
            if deadline is not None:
                pause = max(0.0, min(pause, deadline - time.monotonic()))
            time.sleep(pause)

    # --- streams ------------------------------------------------------------------------------

    def _is_final(self, job_id: str) -> bool:
        return self.get(job_id).state in FINAL_STATES

    def events(self, job_id: str, *, after: int = 0) -> Iterator[Any]:
        """The job's events (:data:`raykd.core.events.Event`) with ``seq > after``, live.

        Ends when the service ends the stream (the job is final). A dropped connection is
        resumed with ``Last-Event-ID``, so no event is lost or repeated; after
        :attr:`reconnect_tries` failed reconnects in a row it raises RaykdConnectionError.
        """
        last, failures = after, 0
        while True:
            headers = {"Last-Event-ID": str(last)} if last else {}
            try:
                terminal = False
                with self._http.stream("GET", f"{self._job(job_id)}/events", headers=headers,
                                       timeout=self._stream_timeout()) as response:
                    self._check(response)
                    failures = 0
                    for msg in iter_sse(response.iter_lines()):
                        event = parse_event(msg.data)
                        if event.seq <= last:
                            continue
                        last = event.seq
                        yield event
                        terminal = event.type in TERMINAL_EVENTS
                if terminal or self._is_final(job_id):
                    return
                time.sleep(self.reconnect_delay)  # ended early (a restart): come back
            except (httpx.TransportError, RaykdConnectionError, RaykdAPIError) as err:
                failures = self._after_failure(err, failures)

    def logs(self, job_id: str, *, offset: int = 0, tail: int | None = None) -> str:
        """The driver log from byte ``offset`` (or its last ``tail`` lines)."""
        return self._log_bytes(job_id, offset=offset, tail=tail).decode("utf-8", "replace")

    def _log_bytes(self, job_id: str, *, offset: int = 0, tail: int | None = None) -> bytes:
        params: dict[str, Any] = {"offset": offset}
        if tail is not None:
            params["tail"] = tail
        return self._request("GET", f"{self._job(job_id)}/logs", params=params).content

    def follow_logs(self, job_id: str, *, offset: int = 0,
                    tail: int | None = None) -> Iterator[str]:
        """The driver log line by line (without line ends) as it grows, until the job is final.

        Args:
            job_id: The job.
            offset: Start at this byte of the log.
            tail: Start with the last ``tail`` lines instead.

        A dropped connection is resumed at the byte where it stopped.
        """
        buffer = b""
        if tail is not None:
            whole = self._log_bytes(job_id)
            offset = len(whole)
            *lines, buffer = whole.split(b"\n")
            for line in lines[-tail:] if tail > 0 else []:
                yield line.rstrip(b"\r").decode("utf-8", "replace")
        failures = 0
        while True:
            params = {"offset": offset, "follow": "true"}
            try:
                with self._http.stream("GET", f"{self._job(job_id)}/logs", params=params,
                                       timeout=self._stream_timeout()) as response:
                    self._check(response)
                    failures = 0
                    for chunk in response.iter_bytes():
                        offset += len(chunk)
                        *done, buffer = (buffer + chunk).split(b"\n")
                        for line in done:
                            yield line.rstrip(b"\r").decode("utf-8", "replace")
                if self._is_final(job_id):
                    if buffer:
                        yield buffer.decode("utf-8", "replace")
                    return
                time.sleep(self.reconnect_delay)
            except (httpx.TransportError, RaykdConnectionError, RaykdAPIError) as err:
                failures = self._after_failure(err, failures)

    # --- artifacts ----------------------------------------------------------------------------

    def artifacts(self, job_id: str) -> list[Artifact]:
        """The job's downloadable files."""
        data = self._request("GET", f"{self._job(job_id)}/artifacts").json()
        return [Artifact.model_validate(a) for a in data]

    def download(self, job_id: str, path: str, dest: str | Path) -> Path:
        """Download one artifact to ``dest`` (a file, or an existing directory to put it in).

        The file appears whole or not at all (written next to it, then renamed).
        """
        dest = Path(dest)
        if dest.is_dir():
            dest = dest / PurePosixPath(path).name
        dest.parent.mkdir(parents=True, exist_ok=True)
        url = f"{self._job(job_id)}/artifacts/{quote(path.lstrip('/'), safe='/')}"
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as out:
                try:
                    with self._http.stream("GET", url) as response:
                        self._check(response)
                        for chunk in response.iter_bytes():
                            out.write(chunk)
                except httpx.TransportError as err:
                    raise self._unreachable(err) from None
            os.replace(tmp, dest)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return dest

    def download_all(self, job_id: str, dest_dir: str | Path) -> list[Path]:
        """Download every artifact under ``dest_dir``, keeping their relative paths."""
        root = Path(dest_dir).resolve()
        paths = []
        for artifact in self.artifacts(job_id):
            target = (root / artifact.path).resolve()
            if not target.is_relative_to(root) or target == root:
                raise UserError(f"artifact path {artifact.path!r} of job {job_id} leaves "
                                f"{str(root)!r}; refused")
            paths.append(self.download(job_id, artifact.path, target))
        return paths
