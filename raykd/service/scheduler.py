"""The queue and the follower: start queued jobs when a slot frees, follow the running ones.

One background thread ticks every ``poll_s``:

0. take or renew the database's ``scheduler`` lease: while another service holds it, this
   one only serves the API;
1. **follow** every pending/running job: append the new lines of its ``events.jsonl`` (from
   the byte offset the last read stopped at) to the database, derive its status
   incrementally (:class:`raykd.service.follower.AttemptTracker`, the rules of
   :func:`raykd.core.status.job_status`) with Ray's view of its driver (alive or not), and record
   the end: ``succeeded`` with a result summary, ``failed`` with the message,
   ``cancelled``, or ``timed_out`` once it ran past its ``max_run_s`` (stopped on Ray); a
   job recorded ``failed`` whose own final event arrives later is corrected, with a note;
2. **reconcile** what the events cannot say: a driver that Ray reports ended without a
   final event, or a submission Ray no longer knows (the head restarted) is marked failed
   with a note saying which; a job that finished while the service was down is recorded
   with a note;
3. **start** queued jobs, highest priority first, then oldest, while fewer than
   ``max_running`` are submitting, pending or running (not while ``paused``). A job is
   recorded ``submitting`` before Ray is asked; one left ``submitting`` is asked again with
   the same submission id, and adopted when Ray already has it.

No request to Ray is made while :attr:`Scheduler.lock` is held.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from raykd.core.allowlist import allowlist_env
from raykd.core.events import SUBMISSION_ENV, parse_event
from raykd.core.faults import ALLOW_ENV
from raykd.core.jobdir import JobLayout
from raykd.core.states import ACTIVE_STATES, FINAL_STATES, SLOT_STATES, SUBMIT_STATES
from raykd.core.status import DIED_MESSAGE
from raykd.data.paths import data_roots_env
from raykd.service.follower import AttemptTracker, read_new_events
from raykd.service.ray_jobs import RAY_TERMINAL, RayJobs, RayRefused, RayUnavailable
from raykd.service.settings import Settings
from raykd.service.store import Store
from raykd.service.tables import JobRow

log = logging.getLogger("raykd.service")
LEASE = "scheduler"
WATCH_FAILED_S = 86400.0  # how long a failed job's events are watched for a late final event


def spec_file(settings: Settings, job_id: str) -> Path:
    """Where the service keeps the spec it submits for ``job_id`` (outside the job's directory)."""
    return settings.layout.submitted_spec(job_id)


def submission_ids(row: JobRow) -> list[str]:
    """Every submission id the service has used for ``row``: ``<id>``, ``<id>.r1``, ..."""
    return [submission_id(row.id, n) for n in range(max(row.attempts, 1))]


def submission_id(job_id: str, attempts: int) -> str:
    """The submission id of the attempt after ``attempts`` earlier ones."""
    return job_id if attempts == 0 else f"{job_id}.r{attempts}"


def result_summary(job_dir: Path) -> dict[str, Any] | None:
    """The headline numbers of ``result.json`` or ``sweep.json`` (None when neither exists)."""
    for name in JobLayout.RESULTS:
        path = job_dir / name
        if path.is_file():
            try:
                data = json.loads(path.read_text())
            except (OSError, ValueError):  # unreadable (another uid's 0600 file) or not JSON
                return None
            keep = ("teachers", "ensemble", "students", "metric", "best", "final", "timings",
                    "dataset", "files")
            summary = {k: data[k] for k in keep if k in data}
            for s in summary.get("students", []):
                for g in s.get("generations", []):
                    g.pop("history", None)
            return {"file": name, **summary}
    return None


def this_attempt(events: list[Any], row: JobRow) -> int | None:
    """Index in ``events`` of the ``job_started`` of the attempt ``row`` submitted last, or None.

    The driver records its submission id (``RAYKD_SUBMISSION_ID``) in ``job_started``: the
    attempt is the one whose id equals ``row.submission_id``. Attempt counts are not
    compared, since an attempt that died before its first event leaves none. Event files
    written before that field existed fall back to comparing the driver's attempt number
    with the service's.
    """
    started = [(i, e) for i, e in enumerate(events) if e.type == "job_started"]
    mine = [i for i, e in started if e.submission_id is not None and e.submission_id == row.submission_id]
    if mine:
        return mine[-1]
    if not started or any(e.submission_id for _, e in started):
        return None  # this submission's driver has not started (yet)
    i, last = started[-1]
    return i if last.attempt >= row.attempts else None


RAY_OWN_LINE = re.compile(r"^(Running entrypoint for job |-- |\[\d{4}-\d\d-\d\d )")
WHY_LINE = re.compile(r"(not found|No such file|Permission denied|Error|error|Traceback|Killed)")


def failed_before_start(log_text: str) -> str:
    """Why a driver failed before ``open_job``, from its log.

    Its last ``error:`` line; else the last line that reads like a failure (``/bin/sh: 1:
    raykd: not found``, ``ModuleNotFoundError: ...``); else its last line of its own. Ray's
    lines (``Running entrypoint for job ...``) never explain a failure.
    """
    lines = [line.strip() for line in log_text.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    own = [line for line in lines if not RAY_OWN_LINE.match(line)]
    why = [line for line in own if WHY_LINE.search(line)]
    return (errors or why or own or ["the driver wrote no log"])[-1][:500]


@dataclass
class Followed:
    """The follower's memory of one job between ticks (rebuilt from the database after a restart)."""

    submission_id: str | None
    attempts: int
    tracker: AttemptTracker
    offset: int  # bytes of events.jsonl read
    created_at: float = 0.0  # the row's: a job deleted and submitted again under its id is another job


@dataclass
class Observation:
    """What one look at a job found outside the lock: Ray's view and the events' view."""

    ray_state: str | None
    reachable: bool
    fields: dict[str, Any]
    driver_error: str | None = None  # why a driver died before its first event (from its log)
    timed_out: str | None = None  # the deadline message, once Ray was asked to stop it


class Scheduler:
    """Runs the queue and follows jobs in a daemon thread (see the module docstring).

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
        self._seen: set[str] = set()  # active jobs followed since this service started
        self._stopped: set[str] = set()  # submissions this service has asked Ray to stop
        self._followed: dict[str, Followed] = {}
        # when this service first saw each submission (the deadline of a driver that never
        # starts: pending on Ray for resources, a runtime env that never gets ready)
        self.waiting_since: dict[str, float] = {}
        self.work = {"bytes_read": 0, "lines_parsed": 0, "rows_loaded": 0}  # what following cost
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
        self._followed.clear()  # another scheduler follows: rebuild from the database if it comes back
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
                self.follow(row)
            except Exception:  # noqa: BLE001 - one job's fault must not stall the others
                log.exception("scheduler: following job %s failed; the next tick tries again", row.id)
        self.watch_failed()
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

    # following ------------------------------------------------------------------------

    def follow(self, row: JobRow) -> None:
        """Ingest new events, then derive the job's state with Ray's view of its driver.

        Ray is asked first, with no lock held; the events are read from where the last
        read stopped; the row is written under the lock once it is re-read and unchanged.
        """
        seen = self.observe(row)
        with self.lock:
            current = self.store.get(row.id)
            if (current is None or current.state not in ACTIVE_STATES
                    or current.submission_id != row.submission_id):
                return  # cancelled, retried or deleted meanwhile: the next tick looks again
            self.record(current, seen)

    def observe(self, row: JobRow) -> Observation:
        """Everything :meth:`record` needs that takes Ray or the file system (no lock held)."""
        # Ray first, the file second: a driver writes its final event before it exits, so
        # when Ray says it ended, that event is already in the file we read next.
        reachable = True
        try:
            ray_state = self.ray.status(row.submission_id) if row.submission_id else None
        except RayUnavailable as err:
            log.debug("job %s: %s", row.id, err)
            ray_state, reachable = None, False
        if reachable and row.cancel_requested and ray_state in ("PENDING", "RUNNING"):
            self._send_stop(row)
        followed = self.ingest(row)
        tracker = followed.tracker
        seen = Observation(ray_state, reachable, {"last_seq": tracker.last_seq, "events_offset": followed.offset})
        alive = (ray_state not in RAY_TERMINAL | {None}) if reachable else None
        if (reachable and ray_state == "FAILED" and not tracker.mine and not row.cancel_requested):
            seen.driver_error = self._driver_error(row.submission_id or "")
        if not row.cancel_requested and (not tracker.mine or tracker.state(alive)[0] == "running"):
            seen.timed_out = self._past_deadline(row, tracker)  # also a driver that never starts
        return seen

    def ingest(self, row: JobRow) -> Followed:
        """Read the job's new events (from the last byte offset), store them, feed the tracker."""
        followed = self._followed.get(row.id)
        if (followed is None or followed.submission_id != row.submission_id
                or followed.attempts != row.attempts or followed.created_at != row.created_at):
            followed = self._rebuild(row)
        read = read_new_events(self.settings.layout.job(row.id).events, followed.offset)
        self.work["bytes_read"] += read.bytes_read
        self.work["lines_parsed"] += read.lines_parsed
        new = [e for e in read.events if e.seq > followed.tracker.last_seq]
        self.store.add_events(row.id, new)
        for event in new:
            followed.tracker.feed(event)
        followed.offset = read.offset
        return followed

    def _rebuild(self, row: JobRow) -> Followed:
        """The tracker of ``row``'s submission from its stored events (once per service and attempt)."""
        tracker = AttemptTracker(row.submission_id, row.attempts)
        stored = self.store.events(row.id)
        self.work["rows_loaded"] += len(stored)
        for _, _, body in stored:
            tracker.feed(parse_event(body))
        followed = Followed(row.submission_id, row.attempts, tracker, row.events_offset or 0, row.created_at)
        self._followed[row.id] = followed
        return followed

    def record(self, row: JobRow, seen: Observation) -> None:
        """Write what ``seen`` says about ``row`` (the lock is held; no Ray call is made here)."""
        tracker = self._followed[row.id].tracker
        fields = dict(seen.fields)
        alive = (seen.ray_state not in RAY_TERMINAL | {None}) if seen.reachable else None
        mine = tracker.mine
        state, error = tracker.state(alive) if mine else ("pending", None)
        if mine:
            fields.update(tracker.fields())
        first_look = row.id not in self._seen and (row.started_at or 0) < self.started_at
        self._seen.add(row.id)
        if first_look and row.state == "running":  # it ran while no service watched it
            fields["note"] = "reconciled after a service restart: the job was still running on Ray"
        if state in FINAL_STATES and mine and error != DIED_MESSAGE:
            if first_look and tracker.end is not None and tracker.end.time < self.started_at:
                fields["note"] = (f"reconciled after a service restart: the job ended ({state}) while "
                                  "the service was down")
            self._finish(row, state, error, fields)
        elif seen.timed_out is not None:
            self.store.update(row.id, state="timed_out", finished_at=time.time(), error=seen.timed_out,
                              **{**fields, "note": "stopped at its deadline (max_run_s)"})
            self._followed.pop(row.id, None)
        elif seen.reachable and (seen.ray_state in RAY_TERMINAL or (seen.ray_state is None and row.submission_id)):
            self._lost(row, seen, fields, started=mine)
        else:
            fields["state"] = "running" if mine and state == "running" else "pending"
            self.store.update(row.id, **fields)

    def _past_deadline(self, row: JobRow, tracker: AttemptTracker) -> str | None:
        """The deadline message when ``row`` has run longer than its ``max_run_s`` and Ray took the stop."""
        limit = row.max_run_s
        waiting = self.waiting_since.setdefault(row.submission_id or row.id, time.time())
        began = tracker.start.time if tracker.mine and tracker.start is not None else waiting
        if limit is None or time.time() - began <= limit:
            return None
        try:
            self.ray.stop(row.submission_id or "")
        except RayUnavailable as err:
            log.warning("job %s is past its deadline but Ray did not take the stop: %s", row.id, err)
            return None
        self._stopped.add(row.submission_id or "")
        return (f"the job ran longer than its deadline (max_run_s = {limit:g} s; running for "
                f"{time.time() - began:.0f} s): the service stopped it on Ray. Retry resumes it; "
                "a longer deadline is set per job (max_run_s) up to the service's cap")

    def _send_stop(self, row: JobRow) -> None:
        """Stop a cancelled job's driver (a cancel recorded while Ray was unreachable), once."""
        sid = row.submission_id
        if sid and sid not in self._stopped:
            self.ray.stop(sid)
            self._stopped.add(sid)

    def _finish(self, row: JobRow, state: str, error: str | None, fields: dict[str, Any]) -> None:
        if state == "failed" and row.cancel_requested:
            state = "cancelled"
        job_dir = self.settings.layout.job(row.id).root
        self.store.update(row.id, state=state, error=error, finished_at=time.time(),
                          result=result_summary(job_dir) if state == "succeeded" else None, **fields)
        if state != "failed":
            self._followed.pop(row.id, None)  # a failed one stays: its events may say otherwise later

    def _lost(self, row: JobRow, seen: Observation, fields: dict[str, Any], *, started: bool) -> None:
        """Ray says the driver ended (or forgot it) and the events have no final word."""
        if row.cancel_requested:
            self.store.update(row.id, **{**fields, "state": "cancelled", "error": "cancelled",
                                         "finished_at": time.time()})
            return
        if seen.ray_state == "FAILED" and not started:  # died before open_job: a bad spec, job id, ...
            self.store.update(row.id, **{
                **fields, "state": "failed", "finished_at": time.time(), "note": "failed before it started",
                "error": (f"the job failed before it started (submission {row.submission_id!r} "
                          f"wrote no job_started event): {seen.driver_error}")})
            return
        why = (f"Ray reports the job {seen.ray_state} without a final event (driver killed or crashed)"
               if seen.ray_state else "the Ray cluster no longer knows this job (head restarted or lost)")
        earlier = fields.get("note")  # e.g. the first look after a restart: kept, then this
        self.store.update(row.id, **{**fields, "state": "failed", "finished_at": time.time(),
                                     "error": f"{why}; retry resumes it from what it finished",
                                     "note": f"{earlier}; then {why}" if earlier else why})

    def watch_failed(self) -> None:
        """Correct a job recorded ``failed`` whose own final event arrives later.

        A job marked failed because Ray lost it (a head restart, a lost node) may still be
        running on a head the service no longer sees, and write ``job_finished`` later. Its
        file is checked (one ``stat``) each tick for a day after; new events are ingested
        and, when this attempt's own ``job_finished`` arrives, the record is corrected (succeeded).
        """
        for row in self.store.failed_since(time.time() - WATCH_FAILED_S):
            try:
                path = self.settings.layout.job(row.id).events
                if not path.is_file() or path.stat().st_size <= (row.events_offset or 0):
                    continue
                tracker = self.ingest(row).tracker
                with self.lock:
                    current = self.store.get(row.id)
                    if current is None or (current.state, current.submission_id) != ("failed", row.submission_id):
                        continue
                    self._correct(current, tracker)
            except Exception:  # noqa: BLE001
                log.exception("scheduler: checking failed job %s for late events failed", row.id)

    def _correct(self, row: JobRow, tracker: AttemptTracker) -> None:
        followed = self._followed[row.id]
        fields: dict[str, Any] = {"last_seq": tracker.last_seq, "events_offset": followed.offset}
        state, error = tracker.state(None) if tracker.mine else ("running", None)
        if tracker.mine:
            fields.update(tracker.fields())
        if state == "succeeded":  # a job_failed later keeps the service's reason (e.g. stopped with it)
            note = (f"corrected: recorded failed ({row.note or row.error}), but the job's own final event "
                    f"says {state}")
            self.store.update(row.id, state=state, error=error, note=note[:1000],
                              finished_at=tracker.end.time if tracker.end is not None else time.time(),
                              result=result_summary(self.settings.layout.job(row.id).root) if state == "succeeded"
                              else None, **fields)
            self._followed.pop(row.id, None)
        else:
            self.store.update(row.id, **fields)

    def _driver_error(self, submission: str) -> str:
        """Why the driver of ``submission`` died before its first event: its log, else Ray's message."""
        try:
            text = self.ray.logs(submission)
        except RayUnavailable:
            text = ""
        if _why(text):
            return failed_before_start(text)
        try:  # e.g. "Job entrypoint command failed with exit code 127, ...: /bin/sh: 1: raykd: not found"
            message = getattr(self.ray.info(submission), "message", None)
        except Exception:  # noqa: BLE001 - best effort: the log said nothing either
            message = None
        if message:
            return failed_before_start(str(message))
        if text.strip():
            return failed_before_start(text)
        return "the driver wrote no log; see Ray's job page"


def _why(text: str) -> bool:
    """Whether a driver's log holds a line that says why it failed."""
    return any(line.strip().startswith("error:") or (WHY_LINE.search(line) and not RAY_OWN_LINE.match(line.strip()))
               for line in text.splitlines())


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
