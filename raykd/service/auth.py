"""Who is calling: users, their tokens (compared in constant time) and the limit on failures.

The REST dependencies (:mod:`raykd.service.deps`) and the dashboard's login
(:mod:`raykd.service.web.routes`) both ask here; neither compares a secret itself.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from fastapi import HTTPException, Request

from raykd.service.ratelimit import FailureLimit
from raykd.service.settings import Settings


@dataclass(frozen=True)
class User:
    """Who is calling: a named user sees only their own jobs; the admin sees all."""

    name: str
    admin: bool


def secret_matches(given: str, expected: str) -> bool:
    """Whether ``given`` is ``expected``, in a time that does not depend on where they differ."""
    return hmac.compare_digest(given.encode(), expected.encode())


def user_for_token(settings: Settings, token: str) -> User | None:
    """The user whose token ``token`` is (constant-time, every token compared), or None."""
    found: User | None = None
    if not token:
        return None  # never matches (settings refuse empty tokens, but be sure)
    if settings.token is not None and secret_matches(token, settings.token.get_secret_value()):
        found = User("admin", admin=True)
    for name, secret in settings.users.items():  # check all: timing does not depend on which
        if secret_matches(token, secret.get_secret_value()):
            found = found or User(name, admin=False)
    return found


def client_address(request: Request) -> str:
    """The caller's address (the proxy's, behind a proxy whose forwarded headers uvicorn
    does not trust)."""
    return request.client.host if request.client else "unknown"


def auth_limit(request: Request) -> FailureLimit:
    """The app's limit on failed authentication (made on first use, per app)."""
    found: FailureLimit | None = getattr(request.app.state, "raykd_auth_limit", None)
    if found is None:
        settings: Settings = request.app.state.raykd.settings
        found = request.app.state.raykd_auth_limit = FailureLimit(settings.auth_failures_per_minute)
    return found


def refuse_if_limited(request: Request, address: str) -> None:
    """429 with Retry-After while ``address`` has failed too often to authenticate."""
    wait = auth_limit(request).retry_after(address)
    if wait is not None:
        raise HTTPException(429, f"too many failed logins or wrong tokens from {address}: try "
                                 f"again in {wait} s (RAYKD_AUTH_FAILURES_PER_MINUTE)",
                            headers={"Retry-After": str(wait)})
