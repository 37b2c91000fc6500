"""Stopping a ``ray start --block`` and its process group (raykd.service.ray_head.stop_ray_start),
on stand-in process groups: a leader that stops its children on SIGTERM, one that exited by
itself and left a child running, and one reaped before the stop."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from raykd.service.ray_head import stop_ray_start

# A group leader with one child in its group (as ray start with its GCS and raylet).
LEADER = textwrap.dedent("""
    import signal, subprocess, sys, time
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    def stop(*_):
        child.terminate(); child.wait(); sys.exit(0)
    signal.signal(signal.SIGTERM, stop)
    print(child.pid, flush=True)  # ready: its SIGTERM handler is in place
    if sys.argv[1] == "exit":
        sys.exit(0)  # ray start gone, its node left behind
    time.sleep(600)
""")


def _group(mode: str) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen([sys.executable, "-c", LEADER, mode], stdout=subprocess.PIPE,
                            text=True, start_new_session=True)
    assert proc.stdout is not None
    return proc, int(proc.stdout.readline())


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    state = open(f"/proc/{pid}/stat").read().rpartition(")")[2].split()[0]
    return state in ("Z", "X")


def _wait_gone(pid: int, why: str) -> None:
    deadline = time.monotonic() + 10
    while not _gone(pid):
        assert time.monotonic() < deadline, why
        time.sleep(0.05)


def test_sigterm_to_the_leader_stops_it_and_its_group() -> None:
    proc, child = _group("block")
    t0 = time.monotonic()
    stop_ray_start(proc.pid, proc.pid, proc=proc)
    assert proc.returncode == 0 and time.monotonic() - t0 < 10  # its own SIGTERM, no SIGKILL
    _wait_gone(child, "the group's child outlived the stop")


def test_a_leader_that_exited_by_itself_still_has_what_it_left_killed() -> None:
    proc, child = _group("exit")
    proc.wait(timeout=30)  # reaped before the stop: the leader's pid is not signalled again
    assert not _gone(child)
    stop_ray_start(proc.pid, proc.pid, proc=proc, group_grace_s=0.5)
    _wait_gone(child, "the node ray start left behind was not killed")


def test_a_group_with_no_member_left_is_not_signalled() -> None:
    proc, child = _group("block")
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    t0 = time.monotonic()
    stop_ray_start(proc.pid, proc.pid, proc=proc)
    assert time.monotonic() - t0 < 5


def test_a_reaped_leaders_group_number_carried_by_a_live_process_is_left_alone(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Once ray start was reaped and no member of its group is left, its number may be given
    to another process: one alive under that number is not ours, and no group is signalled."""
    import raykd.service.ray_head as ray_head

    proc, child = _group("block")
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    _wait_gone(child, "the stand-in group did not die")
    signalled: list[tuple[int, int]] = []
    monkeypatch.setattr(ray_head, "_alive", lambda pid: pid == proc.pid)  # the number reused
    monkeypatch.setattr(ray_head.os, "killpg", lambda pgid, sig: signalled.append((pgid, sig)))
    monkeypatch.setattr(ray_head.os, "kill", lambda pid, sig: signalled.append((pid, sig)))
    stop_ray_start(proc.pid, proc.pid, proc=proc)
    assert signalled == []
