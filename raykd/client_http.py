"""The HTTP layer under :class:`raykd.client.RaykdClient`: the connection and its token,
error answers and unreachable services turned into one-line errors, reconnects with backoff,
and the parser of Server-Sent Events. Torch-free and Ray-free (httpx only).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import httpx

from raykd.core.errors import UserError

DEFAULT_URL = "http://127.0.0.1:8000"
API = "/api/v1"
RETRY_STATUS = (502, 503, 504)
"""Statuses of a service (or its proxy) that is restarting: a stream retries them."""
STREAM_READ_S = 90.0
"""Longest silence on a stream before it counts as dropped (the server sends keepalives)."""


class RaykdAPIError(UserError):
    """The service answered with an error status (4xx/5xx).

    Attributes:
        status_code: The HTTP status.
        detail: The ``detail`` of the JSON error body (a message or a list of field errors).
    """

    def __init__(self, status_code: int, detail: Any, *, hint: str = "") -> None:
        self.status_code = status_code
        self.detail = detail
        reason = httpx.codes.get_reason_phrase(status_code) or "error"
        text = " ".join(f"{status_code} {reason}: {format_detail(detail)}{hint}".split())
        super().__init__(text)


class RaykdConnectionError(UserError):
    """The service cannot be reached (refused, unknown host, timed out)."""


class RaykdTimeoutError(UserError, TimeoutError):
    """:meth:`RaykdClient.wait` gave up before the job ended."""


def format_detail(detail: Any) -> str:
    """One line for an error detail: a message, or FastAPI's list of field errors."""
    if isinstance(detail, list):
        parts = []
        for item in detail:
            if isinstance(item, dict) and "msg" in item:
                loc = ".".join(str(p) for p in item.get("loc", ()))
                parts.append(f"{loc}: {item['msg']}" if loc else str(item["msg"]))
            else:
                parts.append(str(item))
        return "; ".join(parts)
    if isinstance(detail, dict):
        return json.dumps(detail, sort_keys=True)
    return str(detail)


def public_url(url: str) -> str:
    """``url`` without user:password, for messages and reprs."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit(parts._replace(netloc=netloc))


# --- Server-Sent Events ---------------------------------------------------------------------


@dataclass(frozen=True)
class SSEMessage:
    """One dispatched Server-Sent Event."""

    event: str
    data: str
    id: str | None


def iter_sse(lines: Iterable[str]) -> Iterator[SSEMessage]:
    """Parse an ``text/event-stream`` (one line at a time, without line ends) into messages.

    Follows the HTML spec: ``:`` comments are skipped, ``data`` lines are joined by newlines,
    one space after the colon is dropped, a blank line dispatches, an event without data is
    not dispatched, and the last ``id`` carries over to later messages.
    """
    event, data, last_id = "", [], None
    for raw in lines:
        line = raw.rstrip("\r\n")
        if not line:
            if data:
                yield SSEMessage(event or "message", "\n".join(data), last_id)
            event, data = "", []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            data.append(value)
        elif name == "event":
            event = value
        elif name == "id" and "\0" not in value:
            last_id = value
    # An unterminated last message is incomplete (a dropped connection): never dispatched.


# --- the connection -------------------------------------------------------------------------


class ServiceConnection:
    """HTTP plumbing of a raykd client (arguments: see :class:`raykd.client.RaykdClient`)."""

    reconnect_tries: int = 8
    """Reconnects of a stream in a row without getting through, before giving up."""
    reconnect_delay: float = 0.5
    """First pause before a reconnect; doubles on each failure, at most 5 s."""

    def __init__(self, url: str | None = None, token: str | None = None, *, timeout: float = 30,
                 transport: httpx.BaseTransport | None = None) -> None:
        self.url = (url or os.environ.get("RAYKD_URL") or DEFAULT_URL).rstrip("/")
        if urlsplit(self.url).scheme not in ("http", "https") or not urlsplit(self.url).netloc:
            raise UserError(f"raykd service URL {public_url(self.url)!r} is not an http(s) URL; "
                            "set --url or RAYKD_URL, e.g. http://127.0.0.1:8000")
        self._token = token if token is not None else os.environ.get("RAYKD_TOKEN") or None
        self.timeout = timeout
        headers = {"Authorization": f"Bearer {self._token}"} if self._token else {}
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout,
                                  transport=transport)

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    # --- plumbing -------------------------------------------------------------------------------

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Send one request; raise RaykdAPIError / RaykdConnectionError."""
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as err:
            raise self._unreachable(err) from None
        self._check(response)
        return response

    def _check(self, response: httpx.Response) -> None:
        """Raise :class:`RaykdAPIError` for an error status (reads a streamed body)."""
        if response.is_success:
            return
        response.read()
        try:
            detail = response.json().get("detail", response.text)
        except (ValueError, AttributeError):
            detail = response.text[:300] or response.reason_phrase
        hint = ""
        if response.status_code == 401 and not self._token and "RAYKD_TOKEN" not in str(detail):
            hint = " (no token given: set RAYKD_TOKEN or pass --token)"
        raise RaykdAPIError(response.status_code, detail, hint=hint)

    def _unreachable(self, err: httpx.TransportError) -> RaykdConnectionError:
        """The one-line error for a service that cannot be reached."""
        url = public_url(self.url)
        if isinstance(err, httpx.TimeoutException):
            why = f"no answer within {self.timeout:g} s"
        elif isinstance(err, httpx.ConnectError):
            why = "connection refused or host unknown"
        else:
            why = f"{type(err).__name__}: {err}".splitlines()[0]
        return RaykdConnectionError(
            f"cannot reach the raykd service at {url} ({why}); is `raykd serve` running there? "
            "Set the address with RAYKD_URL or --url")

    @staticmethod
    def _job(job_id: str) -> str:
        return f"{API}/jobs/{quote(job_id, safe='')}"

    def _stream_timeout(self) -> httpx.Timeout:
        return httpx.Timeout(self.timeout, read=max(self.timeout, STREAM_READ_S))

    def _after_failure(self, err: Exception, failures: int) -> int:
        """Pause and count one failed stream attempt; raise when it is not worth retrying."""
        if isinstance(err, RaykdAPIError) and err.status_code not in RETRY_STATUS:
            raise err
        failures += 1
        if failures > self.reconnect_tries:
            if isinstance(err, httpx.TransportError):
                raise self._unreachable(err) from None
            raise err
        time.sleep(min(5.0, self.reconnect_delay * 2 ** (failures - 1)))
        return failures
