"""The queue and the follower: start queued jobs when a slot frees, follow the running ones.

One background thread ticks every ``poll_s``:

1. **follow** every pending/running job: append the new lines of its ``events.jsonl`` to
   the database, derive its status (:func:`raykd.schema.job_status`) with Ray's view of
   its driver (alive or not), and record the end: ``succeeded`` with a result summary,
   ``failed`` with the message, ``cancelled``;
2. **reconcile** what the events cannot say: a driver that Ray reports ended without a
   final event, or a submission Ray no longer knows (the head restarted) is marked failed
   with a note saying which; a job that finished while the service was down is recorded
   with a note;
3. **start** queued jobs, highest priority first, then oldest, while fewer than
   ``max_running`` are pending or running (not while ``paused``).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path
from typing import Any

from raykd.allowlist import allowlist_env
from raykd.data.paths import data_roots_env
from raykd.events import EVENTS_FILE, SUBMISSION_ENV, parse_event, read_events
from raykd.faults import ALLOW_ENV
from raykd.schema import DIED_MESSAGE, job_status
from raykd.service.ray_jobs import RAY_TERMINAL, RayJobs, RayRefused, RayUnavailable
from raykd.service.settings import Settings
from raykd.service.store import JobRow, Store

log = logging.getLogger("raykd.service")
ACTIVE = ("pending", "running")


def spec_file(settings: Settings, job_id: str) -> Path:
    """Where the service keeps the spec it submits for ``job_id`` (outside the job's directory)."""
    return settings.storage / ".service" / "specs" / f"{job_id}.json"


def submission_ids(row: JobRow) -> list[str]:
    """Every submission id the service has used for ``row``: ``<id>``, ``<id>.r1``, ..."""
    return [submission_id(row.id, n) for n in range(max(row.attempts, 1))]


def submission_id(job_id: str, attempts: int) -> str:
    """The submission id of the attempt after ``attempts`` earlier ones."""
    return job_id if attempts == 0 else f"{job_id}.r{attempts}"


def result_summary(job_dir: Path) -> dict[str, Any] | None:
    """The headline numbers of ``result.json`` or ``sweep.json`` (None when neither exists)."""
    for name in ("result.json", "sweep.json"):
        path = job_dir / name
        if path.is_file():
            try:
                data = json.loads(path.read_text())
            except (OSError, ValueError):  # unreadable (another uid's 0600 file) or not JSON
                return None
            keep = ("teachers", "ensemble", "students", "best", "final", "timings", "dataset", "files")
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


def failed_before_start(log_text: str) -> str:
    """Why a driver failed before ``open_job``: its log's last ``error:`` line, else its last line."""
    lines = [line.strip() for line in log_text.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    return (errors or lines or ["the driver wrote no log"])[-1][:500]


class Scheduler:
    """Runs the queue and follows jobs in a daemon thread (see the module docstring).

    :attr:`lock` is held while one job is followed or submitted; the routes take it to
    change a job (cancel, retry, re-prioritise, delete), so such a change and a submission
    never interleave.
    """

    def __init__(self, settings: Settings, store: Store, ray: RayJobs) -> None:
        self.settings, self.store, self.ray = settings, store, ray
        self._stop = threading.Event()
        self.lock = threading.Lock()
        self.started_at = time.time()
        self._seen: set[str] = set()  # active jobs followed since this service started
        self._stopped: set[str] = set()  # submissions this service has asked Ray to stop
        self._thread = threading.Thread(target=self._loop, name="raykd-scheduler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception:  # noqa: BLE001 - keep serving; the next tick retries
                log.exception("scheduler tick failed")
            self._stop.wait(self.settings.poll_s)

    def tick(self) -> None:
        """One round: follow and reconcile the active jobs, then start queued ones.

        One job's error is logged with its id and does not stop the others.
        """
        for row in self.store.in_states(*ACTIVE):
            try:
                with self.lock:
                    current = self.store.get(row.id)
                    if current is not None and current.state in ACTIVE:
                        self.follow(current)
            except Exception:  # noqa: BLE001 - one job's fault must not stall the others
                log.exception("scheduler: following job %s failed; the next tick tries again", row.id)
        if not self.settings.paused:
            self.start_queued()

    def start_queued(self) -> None:
        """Submit queued jobs in queue order while slots are free; stop while Ray is away."""
        free = self.settings.max_running - len(self.store.in_states(*ACTIVE))
        for row in self.store.queue():
            if free <= 0:
                return
            try:
                with self.lock:
                    current = self.store.get(row.id)
                    if current is None or current.state != "queued":
                        continue  # cancelled, deleted or started meanwhile
                    outcome = self.submit(current)
            except Exception:  # noqa: BLE001 - a bug for this job: the next job still starts
                log.exception("scheduler: submitting job %s failed", row.id)
                continue
            if outcome == "submitted":
                free -= 1
            elif outcome == "waiting":
                return  # Ray is away: the others would wait too

    def submit(self, row: JobRow) -> str:
        """Hand a queued job to Ray (``raykd run SPEC --job-id ID``).

        Returns ``submitted``; ``waiting`` when Ray cannot be reached (the job stays queued
        with a note); ``refused`` when Ray answered that it never will take this submission
        (the job fails with a message, and the queue moves on).
        """
        path = spec_file(self.settings, row.id)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(row.spec))
        submission = submission_id(row.id, row.attempts)
        try:
            self.ray.submit(submission_id=submission, spec_path=path, job_id=row.id,
                            env={SUBMISSION_ENV: submission, **allowlist_env(),
                                 **data_roots_env(self.settings.data_roots),
                                 **({ALLOW_ENV: "1"} if self.settings.allow_fault_injection else {})})
        except RayUnavailable as err:
            log.warning("could not submit %s to Ray: %s", row.id, err)
            self.store.update(row.id, note=f"waiting: Ray is not reachable ({str(err)[:200]})")
            return "waiting"
        except RayRefused as err:
            log.warning("Ray refused submission %s of job %s: %s", submission, row.id, err)
            nxt = submission_id(row.id, row.attempts + 1)
            self.store.update(
                row.id, state="failed", finished_at=time.time(), attempts=row.attempts + 1,
                error=(f"Ray refused submission id {submission!r}: {err}. Ray probably still holds a "
                       f"job of that id (from a deleted job of the same id): retry to submit it "
                       f"as {nxt!r}, or remove Ray's record with `ray job delete {submission}` first"),
                note="Ray refused the submission")
            return "refused"
        self.store.update(row.id, state="pending", submission_id=submission, attempts=row.attempts + 1,
                          note=None, error=None, finished_at=None)
        return "submitted"

    def follow(self, row: JobRow) -> None:
        """Ingest new events, then derive the job's state with Ray's view of its driver."""
        job_dir = self.settings.storage / row.id
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
        self.store.add_events(row.id, read_events(job_dir / EVENTS_FILE, after=row.last_seq))
        events = [parse_event(body) for _, _, body in self.store.events(row.id)]
        start = this_attempt(events, row)
        mine = start is not None
        current: list[Any] = []  # the events up to this attempt's end (job_status: the last attempt)
        started_at: float | None = None
        if start is not None:
            later = [i for i, e in enumerate(events) if i > start and e.type == "job_started"]
            current = events[: later[0]] if later else events
            started_at = events[start].time
        alive = (ray_state not in RAY_TERMINAL | {None}) if reachable else None
        status = job_status(current, process_alive=alive)
        fields: dict[str, Any] = {"last_seq": events[-1].seq if events else 0}
        if mine:
            fields.update(stage=status.stage, progress=status.progress, latest_metrics=status.latest_metrics,
                          started_at=started_at)
        state = status.state if mine else "pending"
        first_look = row.id not in self._seen and (row.started_at or 0) < self.started_at
        self._seen.add(row.id)
        if first_look and row.state == "running":  # it ran while no service watched it
            fields["note"] = "reconciled after a service restart: the job was still running on Ray"
        if state in ("succeeded", "failed", "cancelled") and mine and status.error != DIED_MESSAGE:
            if first_look and current[-1].time < self.started_at:
                fields["note"] = (f"reconciled after a service restart: the job ended ({state}) while "
                                  "the service was down")
            self._finish(row, state, status.error, job_dir, fields)
        elif reachable and (ray_state in RAY_TERMINAL or (ray_state is None and row.submission_id)):
            self._lost(row, ray_state, job_dir, fields, started=mine)
        else:
            fields["state"] = "running" if mine and state == "running" else "pending"
            self.store.update(row.id, **fields)

    def _send_stop(self, row: JobRow) -> None:
        """Stop a cancelled job's driver (a cancel recorded while Ray was unreachable), once."""
        sid = row.submission_id
        if sid and sid not in self._stopped:
            self.ray.stop(sid)
            self._stopped.add(sid)

    def _finish(self, row: JobRow, state: str, error: str | None, job_dir: Path,
                fields: dict[str, Any]) -> None:
        if state == "failed" and row.cancel_requested:
            state = "cancelled"
        self.store.update(row.id, state=state, error=error, finished_at=time.time(),
                          result=result_summary(job_dir) if state == "succeeded" else None, **fields)

    def _lost(self, row: JobRow, ray_state: str | None, job_dir: Path, fields: dict[str, Any], *,
              started: bool) -> None:
        """Ray says the driver ended (or forgot it) and the events have no final word."""
        if row.cancel_requested:
            self.store.update(row.id, state="cancelled", error="cancelled", finished_at=time.time(), **fields)
            return
        if ray_state == "FAILED" and not started:  # died before open_job: a bad spec, job id, ...
            reason = self._driver_error(row.submission_id or "")
            self.store.update(row.id, state="failed", finished_at=time.time(), note="failed before it started",
                              error=(f"the job failed before it started (submission {row.submission_id!r} "
                                     f"wrote no job_started event): {reason}"), **fields)
            return
        why = (f"Ray reports the job {ray_state} without a final event (driver killed or crashed)"
               if ray_state else "the Ray cluster no longer knows this job (head restarted or lost)")
        self.store.update(row.id, state="failed", finished_at=time.time(),
                          error=f"{why}; retry resumes it from what it finished", note=why, **fields)

    def _driver_error(self, submission: str) -> str:
        """What the driver of ``submission`` said last (its log), or Ray's message about it."""
        try:
            text = self.ray.logs(submission)
        except RayUnavailable:
            text = ""
        if text.strip():
            return failed_before_start(text)
        try:
            message = getattr(self.ray.info(submission), "message", None)
        except Exception:  # noqa: BLE001 - best effort: the log said nothing either
            message = None
        return str(message)[:500] if message else "the driver wrote no log; see Ray's job page"
