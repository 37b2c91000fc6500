"""The queue: start queued jobs when a slot frees; each tick also hands the active jobs to
the follower (:mod:`raykd.service.follower`).

One background thread ticks every ``poll_s``:

0. take or renew the database's ``scheduler`` lease: while another service holds it, this
   one only serves the API;
1. **follow** every pending/running job, and watch recently failed ones for a late final
   event (:class:`raykd.service.follower.Follower`);
2. **start** queued jobs, highest priority first, then oldest, while fewer than
   ``max_running`` are submitting, pending or running (not while ``paused``). A job is
   recorded ``submitting`` before Ray is asked; one left ``submitting`` is asked again with
   the same submission id, and adopted when Ray already has it.

No request to Ray is made while :attr:`Scheduler.lock` is held.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import socket
import threading
import time
from pathlib import Path
from typing import Any

from raykd.core.allowlist import allowlist_env
from raykd.core.events import SUBMISSION_ENV
from raykd.core.faults import ALLOW_ENV
from raykd.core.states import ACTIVE_STATES, SLOT_STATES, SUBMIT_STATES
from raykd.data.paths import data_roots_env
from raykd.service.follower import Follower
from raykd.service.ray_jobs import RAY_TERMINAL, RayJobs, RayRefused, RayUnavailable
from raykd.service.settings import Settings
from raykd.service.store import Store
from raykd.service.tables import JobRow

log = logging.getLogger("raykd.service")
LEASE = "scheduler"


def spec_file(settings: Settings, job_id: str) -> Path:
    """Where the service keeps the spec it submits for ``job_id`` (outside the job's directory)."""
    return settings.layout.submitted_spec(job_id)


def submission_ids(row: JobRow) -> list[str]:
    """Every submission id the service has used for ``row``: ``<id>``, ``<id>.r1``, ..."""
    return [submission_id(row.id, n) for n in range(max(row.attempts, 1))]


def submission_id(job_id: str, attempts: int) -> str:
    """The submission id of the attempt after ``attempts`` earlier ones."""
    return job_id if attempts == 0 else f"{job_id}.r{attempts}"


class Scheduler:
    """Runs the queue, and the follower, in a daemon thread (see the module docstring).

    :attr:`lock` guards the step from reading a job's row to writing it: the routes take
    it to change a job (cancel, retry, re-prioritise, delete), so such a change and the
    scheduler's write never interleave. No request to Ray is made while it is held: the
    scheduler reads the row, lets the lock go, asks Ray, then takes the lock again and
    re-reads the row before writing what Ray said.

    Only the holder of the database's ``scheduler`` lease schedules and follows; another
    service on the same database serves the API and waits for the lease to expire.
    """

    def __init__(self, settings: Settings, store: Store, ray: RayJobs) -> None:
        self.settings, self.store, self.ray = settings, store, ray
        self._stop = threading.Event()
        self.lock = threading.Lock()
        self.started_at = time.time()
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self._lease_until = 0.0
        self.follower = Follower(settings, store, ray, self.lock, self.started_at)
        self._thread = threading.Thread(target=self._loop, name="raykd-scheduler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def holds_lease(self) -> bool:
        """Whether this scheduler leads (holds the database's lease) now."""
        return self._lease_until > time.time()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        if self._lease_until:
            self.store.release_lease(LEASE, self.holder)
            self._lease_until = 0.0

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception:  # noqa: BLE001 - keep serving; the next tick retries
                log.exception("scheduler tick failed")
            self._stop.wait(self.settings.poll_s)

    # the lease ------------------------------------------------------------------------

    def leader(self) -> bool:
        """Take or renew the database's scheduler lease; False while another service holds it."""
        now = time.time()
        if self._lease_until - now > self.settings.lease_s / 2:
            return True
        current = self.store.lease(LEASE)
        dead = current.holder if current is not None and _dead_here(current.holder) else None
        if self.store.take_lease(LEASE, self.holder, self.settings.lease_s, steal_from=dead):
            if not self._lease_until:
                log.info("scheduler %s holds the lease on the database", self.holder)
            self._lease_until = now + self.settings.lease_s
            return True
        if self._lease_until:
            log.warning("scheduler %s lost the lease to another service", self.holder)
        self._lease_until = 0.0
        self.follower.forget()  # another scheduler follows: rebuilt from the database if it comes back
        return False

    # the tick -------------------------------------------------------------------------

    def tick(self) -> None:
        """One round: follow and reconcile the active jobs, then start queued ones.

        One job's error is logged with its id and does not stop the others. Nothing
        happens unless this scheduler holds the lease.
        """
        if not self.leader():
            return
        for row in self.store.in_states(*ACTIVE_STATES):
            if not self.leader():  # renewed between jobs: a slow Ray must not let it lapse mid-tick
                return
            try:
                self.follower.follow(row)
            except Exception:  # noqa: BLE001 - one job's fault must not stall the others
                log.exception("scheduler: following job %s failed; the next tick tries again", row.id)
        self.follower.watch_failed()
        for row in self.store.in_states("submitting"):
            if not self.leader():
                return
            try:
                self.submit(row)
            except Exception:  # noqa: BLE001
                log.exception("scheduler: submitting job %s again failed", row.id)
        if not self.settings.paused:
            self.start_queued()

    def start_queued(self) -> None:
        """Submit queued jobs in queue order while slots are free; stop while Ray is away."""
        free = self.settings.max_running - len(self.store.in_states(*SLOT_STATES))
        for row in self.store.queue():
            if free <= 0 or not self.leader():
                return
            try:
                outcome = self.submit(row)
            except Exception:  # noqa: BLE001 - a bug for this job: the next job still starts
                log.exception("scheduler: submitting job %s failed", row.id)
                continue
            if outcome == "submitted":
                free -= 1
            elif outcome == "waiting":
                return  # Ray is away: the others would wait too

    # submitting -----------------------------------------------------------------------

    def submit(self, row: JobRow) -> str:
        """Hand a queued job to Ray (``<driver> run SPEC --job-id ID``), or finish handing one.

        The job is recorded ``submitting`` (with its submission id) before Ray is asked, so
        a submission Ray took whose outcome was never written (a failed database write, a
        crash, a timeout) is asked again with the same id: Ray refuses the duplicate, and
        that Ray job is adopted instead of failing the job.

        Returns ``submitted``; ``waiting`` when Ray cannot be reached (the job stays
        ``submitting`` with a note; the next tick asks again); ``refused`` when Ray answered
        that it never will take this submission (the job fails with a message); ``skipped``
        when the job changed meanwhile.
        """
        with self.lock:
            current = self.store.get(row.id)
            if current is None or current.state not in SUBMIT_STATES:
                return "skipped"  # cancelled, deleted or started meanwhile
            again = current.state == "submitting"
            if not again:
                submission = submission_id(current.id, current.attempts)
                current = self.store.update(current.id, state="submitting", submission_id=submission,
                                            attempts=current.attempts + 1, note=None, error=None,
                                            finished_at=None) or current
        submission = current.submission_id or submission_id(current.id, current.attempts - 1)
        if again and current.cancel_requested:
            return self._cancel_submitting(current, submission)
        path = spec_file(self.settings, current.id)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(current.spec))
        try:
            self.ray.submit(submission_id=submission, spec_path=path, job_id=current.id, owner=current.owner,
                            env={SUBMISSION_ENV: submission, **allowlist_env(),
                                 **data_roots_env(self.settings.data_roots),
                                 **({ALLOW_ENV: "1"} if self.settings.allow_fault_injection else {})})
        except RayUnavailable as err:
            log.warning("could not submit %s to Ray: %s", current.id, err)
            self._write(current, note=f"waiting: Ray is not reachable ({str(err)[:200]})")
            return "waiting"
        except RayRefused as err:
            if again and "already exists" in str(err):
                log.warning("job %s: Ray already has submission %s (an earlier try got through): "
                            "following it", current.id, submission)
                self._write(current, state="pending", note="adopted: Ray already had this submission")
                return "submitted"
            log.warning("Ray refused submission %s of job %s: %s", submission, current.id, err)
            nxt = submission_id(current.id, current.attempts)
            self._write(current, state="failed", finished_at=time.time(),
                        error=(f"Ray refused submission id {submission!r}: {err}. Ray probably still holds "
                               f"a job of that id (from a deleted job of the same id): retry to submit "
                               f"it as {nxt!r}, or remove Ray's record with `ray job delete {submission}` "
                               "first"),
                        note="Ray refused the submission")
            return "refused"
        self._write(current, state="pending", note=None)
        return "submitted"

    def _cancel_submitting(self, row: JobRow, submission: str) -> str:
        """A job cancelled while its submission's outcome was unknown: stop it if Ray has it."""
        try:
            ray_state = self.ray.status(submission)
            if ray_state in ("PENDING", "RUNNING"):
                self.ray.stop(submission)
        except RayUnavailable:
            return "waiting"
        if ray_state is None or ray_state in RAY_TERMINAL:
            self._write(row, state="cancelled", error="cancelled", finished_at=time.time())
        else:
            self._write(row, state="pending")  # the follower sees it stop and records the end
        return "skipped"

    def _write(self, row: JobRow, **fields: Any) -> bool:
        """Write ``fields`` to ``row`` if it is still the row that was read (same state and submission)."""
        with self.lock:
            current = self.store.get(row.id)
            if current is None or (current.state, current.submission_id) != (row.state, row.submission_id):
                return False
            self.store.update(row.id, **fields)
            return True


def _dead_here(holder: str) -> bool:
    """Whether a lease ``holder`` (``host:pid:nonce``) is a process of this host that no longer runs."""
    host, _, rest = holder.partition(":")
    pid = rest.partition(":")[0]
    if host != socket.gethostname() or not (pid.isascii() and pid.isdigit()) or int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False
