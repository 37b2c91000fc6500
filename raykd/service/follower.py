"""The follower: keeps the record of every submitted job in step with its events and Ray.

Each tick of the scheduler (:mod:`raykd.service.scheduler`) hands it every
pending/running job: it appends the new lines of the job's ``events.jsonl`` (from the byte
offset the last read stopped at) to the database, derives its status incrementally
(:class:`raykd.service.attempts.AttemptTracker`, the rules of
:func:`raykd.core.status.job_status`) with Ray's view of its driver (alive or not), and
records the end: ``succeeded`` with a result summary, ``failed`` with the message,
``cancelled``, or ``timed_out`` once it ran past its ``max_run_s`` (stopped on Ray). It
also reconciles what the events cannot say: a driver that Ray reports ended without a
final event, or a submission Ray no longer knows (the head restarted), is marked failed
with a note saying which; a job that finished while the service was down is recorded with
a note; a job recorded ``failed`` whose own final event arrives later is corrected.

No request to Ray is made while the scheduler's lock is held.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from raykd.core.events import parse_event, read_new_events
from raykd.core.jobdir import JobLayout
from raykd.core.states import ACTIVE_STATES, FINAL_STATES
from raykd.core.status import DIED_MESSAGE
from raykd.service.attempts import AttemptTracker
from raykd.service.ray_jobs import RAY_TERMINAL, RayJobs, RayUnavailable
from raykd.service.settings import Settings
from raykd.service.store import Store
from raykd.service.tables import JobRow

log = logging.getLogger("raykd.service")
WATCH_FAILED_S = 86400.0  # how long a failed job's events are watched for a late final event


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


class Follower:
    """Follows the active jobs (see the module docstring), one job per :meth:`follow`.

    ``lock`` is the scheduler's: a job's row is re-read and written under it, and Ray is
    asked only while it is not held. ``started_at`` is the service's start (what ran or
    ended before it is reconciled with a note).
    """

    def __init__(self, settings: Settings, store: Store, ray: RayJobs, lock: threading.Lock,
                 started_at: float) -> None:
        self.settings, self.store, self.ray, self.lock = settings, store, ray, lock
        self.started_at = started_at
        self._seen: set[str] = set()  # active jobs followed since this service started
        self._stopped: set[str] = set()  # submissions this service has asked Ray to stop
        self._followed: dict[str, Followed] = {}
        # when this service first saw each submission (the deadline of a driver that never
        # starts: pending on Ray for resources, a runtime env that never gets ready)
        self.waiting_since: dict[str, float] = {}
        self.work = {"bytes_read": 0, "lines_parsed": 0, "rows_loaded": 0}  # what following cost

    def forget(self) -> None:
        """Drop the memory of every job (another scheduler follows them now: it is rebuilt
        from the database if this one leads again)."""
        self._followed.clear()

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
