"""The dashboard's session table on a clock of the test's own: idle and absolute lifetimes,
the per-user cap, and the service's settings reaching the table."""

from __future__ import annotations

from types import SimpleNamespace

from starlette.applications import Starlette

from raykd.service.auth import User
from raykd.service.settings import Settings
from raykd.service.web.sessions import Sessions, sessions_of

ALICE, BOB = User(name="alice", admin=False), User(name="bob", admin=False)


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_a_session_used_all_the_time_still_ends_max_age_after_its_login() -> None:
    clock = Clock()
    sessions = Sessions(idle_s=600, max_age_s=7 * 86400, clock=clock)
    sid, _ = sessions.create(ALICE)
    while clock.now + 300 < 1_000_000.0 + 7 * 86400:  # a request every 5 minutes for a week
        clock.now += 300
        assert sessions.get(sid) is not None
    clock.now = 1_000_000.0 + 7 * 86400 + 1
    assert sessions.get(sid) is None
    assert sessions.get(sid) is None  # gone, not just refused once


def test_an_idle_session_ends_after_idle_s_and_a_request_restarts_its_idle_clock() -> None:
    clock = Clock()
    sessions = Sessions(idle_s=600, clock=clock)
    sid, _ = sessions.create(BOB)
    clock.now += 599
    assert sessions.get(sid) is not None  # the idle clock starts again here
    clock.now += 599
    assert sessions.get(sid) is not None
    clock.now += 601
    assert sessions.get(sid) is None


def test_a_users_new_login_ends_only_that_users_oldest_session_past_the_cap() -> None:
    clock = Clock()
    sessions = Sessions(per_user=2, clock=clock)
    bob, _ = sessions.create(BOB)
    alice = []
    for _ in range(3):
        clock.now += 1
        alice.append(sessions.create(ALICE)[0])
    assert [sessions.get(s) is not None for s in alice] == [False, True, True]
    assert sessions.get(bob) is not None


def test_the_services_settings_make_its_session_table() -> None:
    app = Starlette()
    settings = Settings(token="t" * 40, session_idle_s=60, session_max_s=15, sessions_per_user=3)
    app.state.raykd = SimpleNamespace(settings=settings)
    table = sessions_of(app)
    assert (table.idle_s, table.max_age_s, table.per_user) == (60, 15, 3)
    assert sessions_of(app) is table  # one per app
