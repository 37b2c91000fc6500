"""Browser sessions of the dashboard: a random id in an HttpOnly cookie, kept in memory.

The cookie holds only the session id (never the token); the id maps to the user and a
per-session CSRF value that pages embed and send back in ``X-Raykd-CSRF`` with every
request that changes state. Sessions live in this process (a restart logs everyone out),
expire after ``IDLE_S`` without a request, and are bounded in number (the least recently
used goes first).
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

COOKIE = "raykd_session"
CSRF_HEADER = "X-Raykd-CSRF"
IDLE_S = 12 * 3600.0
MAX_SESSIONS = 10_000
_create_lock = threading.Lock()


@dataclass
class Session:
    """One logged-in browser: who it is, its CSRF value, when it was last used."""

    user: Any  # raykd.service.deps.User
    csrf: str
    seen: float


def _key(session_id: str) -> str:
    """What the table is keyed by: a hash of the id (lookups never compare the id itself)."""
    return hashlib.sha256(session_id.encode()).hexdigest()


class Sessions:
    """Session id -> :class:`Session`, thread-safe (sync routes run in a thread pool)."""

    def __init__(self, idle_s: float = IDLE_S, limit: int = MAX_SESSIONS) -> None:
        self.idle_s, self.limit = idle_s, limit
        self._table: OrderedDict[str, Session] = OrderedDict()
        self._lock = threading.Lock()

    def create(self, user: Any) -> tuple[str, Session]:
        """A new session for ``user``: its id (for the cookie) and the session."""
        session_id = secrets.token_urlsafe(32)
        session = Session(user=user, csrf=secrets.token_urlsafe(24), seen=time.time())
        with self._lock:
            self._table[_key(session_id)] = session
            while len(self._table) > self.limit:
                self._table.popitem(last=False)
        return session_id, session

    def get(self, session_id: str | None) -> Session | None:
        """The live session of ``session_id`` (its idle clock restarts), or None."""
        if not session_id or len(session_id) > 128:
            return None
        key, now = _key(session_id), time.time()
        with self._lock:
            session = self._table.get(key)
            if session is None:
                return None
            if now - session.seen > self.idle_s:
                del self._table[key]
                return None
            session.seen = now
            self._table.move_to_end(key)
            return session

    def drop(self, session_id: str | None) -> None:
        if session_id:
            with self._lock:
                self._table.pop(_key(session_id), None)


def sessions_of(app: Any) -> Sessions:
    """The app's session table (made on first use, kept in ``app.state.raykd_sessions``)."""
    found = getattr(app.state, "raykd_sessions", None)
    if found is None:
        with _create_lock:
            found = getattr(app.state, "raykd_sessions", None)
            if found is None:
                found = app.state.raykd_sessions = Sessions()
    return found


def request_session(request: Any) -> tuple[str | None, Session | None]:
    """The request's session cookie and its live session (None, None without one)."""
    session_id = request.cookies.get(COOKIE)
    if not session_id:
        return None, None
    return session_id, sessions_of(request.app).get(session_id)
