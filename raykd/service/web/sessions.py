"""Browser sessions of the dashboard: a random id in an HttpOnly cookie, kept in memory.

The cookie holds only the session id (never the token); the id maps to the user and a
per-session CSRF value that pages embed and send back in ``X-Raykd-CSRF`` with every
request that changes state. Sessions live in this process (a restart logs everyone out),
expire after ``idle_s`` without a request and ``max_age_s`` after login however much they
are used, and are bounded per user (a user's new login ends only that user's oldest
session past the cap) and in all (the least recently used goes first).
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from starlette.applications import Starlette
from starlette.requests import HTTPConnection

from raykd.service.auth import User

COOKIE = "raykd_session"
CSRF_HEADER = "X-Raykd-CSRF"
IDLE_S = 12 * 3600.0
MAX_AGE_S = 7 * 24 * 3600.0
MAX_SESSIONS = 10_000
PER_USER = 20
_create_lock = threading.Lock()


@dataclass
class Session:
    """One logged-in browser: who it is, its CSRF value, when it was last used."""

    user: User
    csrf: str
    seen: float
    created: float = 0.0


def _key(session_id: str) -> str:
    """What the table is keyed by: a hash of the id (lookups never compare the id itself)."""
    return hashlib.sha256(session_id.encode()).hexdigest()


class Sessions:
    """Session id -> :class:`Session`, thread-safe (sync routes run in a thread pool)."""

    def __init__(self, idle_s: float = IDLE_S, limit: int = MAX_SESSIONS, per_user: int = PER_USER,
                 max_age_s: float = MAX_AGE_S, clock: Callable[[], float] = time.time) -> None:
        self.idle_s, self.limit, self.per_user, self.max_age_s = idle_s, limit, per_user, max_age_s
        self.clock = clock  # seconds; the tests' own clock passes days in no time
        self._table: OrderedDict[str, Session] = OrderedDict()
        self._lock = threading.Lock()

    def create(self, user: User) -> tuple[str, Session]:
        """A new session for ``user``: its id (for the cookie) and the session.

        Past ``per_user`` sessions, this user's oldest go (never another user's); past
        ``limit`` in all, the least recently used.
        """
        session_id = secrets.token_urlsafe(32)
        now = self.clock()
        session = Session(user=user, csrf=secrets.token_urlsafe(24), seen=now, created=now)
        with self._lock:
            self._table[_key(session_id)] = session
            mine = sorted((s.created, k) for k, s in self._table.items() if s.user == user)
            for _, key in mine[: max(0, len(mine) - self.per_user)]:
                del self._table[key]
            while len(self._table) > self.limit:
                self._table.popitem(last=False)
        return session_id, session

    def get(self, session_id: str | None) -> Session | None:
        """The live session of ``session_id`` (its idle clock restarts), or None."""
        if not session_id or len(session_id) > 128:
            return None
        key, now = _key(session_id), self.clock()
        with self._lock:
            session = self._table.get(key)
            if session is None:
                return None
            if now - session.seen > self.idle_s or now - session.created > self.max_age_s:
                del self._table[key]
                return None
            session.seen = now
            self._table.move_to_end(key)
            return session

    def drop(self, session_id: str | None) -> None:
        if session_id:
            with self._lock:
                self._table.pop(_key(session_id), None)


def sessions_of(app: Starlette) -> Sessions:
    """The app's session table (made on first use, kept in ``app.state.raykd_sessions``)."""
    found = getattr(app.state, "raykd_sessions", None)
    if found is None:
        with _create_lock:
            found = getattr(app.state, "raykd_sessions", None)
            if found is None:
                found = app.state.raykd_sessions = _sessions_for(app)
    return found


def _sessions_for(app: Starlette) -> Sessions:
    """A session table with the service's settings (the defaults outside a running service)."""
    settings = getattr(getattr(app.state, "raykd", None), "settings", None)
    if settings is None:
        return Sessions()
    return Sessions(idle_s=settings.session_idle_s, per_user=settings.sessions_per_user,
                    max_age_s=settings.session_max_s)


def request_session(request: HTTPConnection) -> tuple[str | None, Session | None]:
    """The request's session cookie and its live session (None, None without one)."""
    session_id = request.cookies.get(COOKIE)
    if not session_id:
        return None, None
    return session_id, sessions_of(request.app).get(session_id)
