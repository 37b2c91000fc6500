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

from raykd.events import EVENTS_FILE, parse_event, read_events
from raykd.schema import DIED_MESSAGE, job_status
from raykd.service.ray_jobs import RAY_TERMINAL, RayJobs
from raykd.service.settings import Settings
from raykd.service.store import JobRow, Store

log = logging.getLogger("raykd.service")
ACTIVE = ("pending", "running")


def spec_file(settings: Settings, job_id: str) -> Path:
    """Where the service keeps the spec it submits for ``job_id`` (outside the job's directory)."""
    return settings.storage / ".service" / "specs" / f"{job_id}.json"


def result_summary(job_dir: Path) -> dict[str, Any] | None:
    """The headline numbers of ``result.json`` or ``sweep.json`` (None when neither exists)."""
    for name in ("result.json", "sweep.json"):
        path = job_dir / name
        if path.is_file():
            try:
                data = json.loads(path.read_text())
            except ValueError:
                return None
            keep = ("teachers", "ensemble", "students", "best", "final", "timings", "dataset", "files")
            summary = {k: data[k] for k in keep if k in data}
            for s in summary.get("students", []):
                for g in s.get("generations", []):
                    g.pop("history", None)
            return {"file": name, **summary}
    return None


class Scheduler:
    """Runs the queue and follows jobs in a daemon thread (see the module docstring)."""

    def __init__(self, settings: Settings, store: Store, ray: RayJobs) -> None:
        self.settings, self.store, self.ray = settings, store, ray
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.started_at = time.time()
        self._seen: set[str] = set()  # active jobs followed since this service started
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
        """One round: follow and reconcile the active jobs, then start queued ones."""
        with self._lock:
            for row in self.store.in_states(*ACTIVE):
                self.follow(row)
            if not self.settings.paused:
                self.start_queued()

    def start_queued(self) -> None:
        free = self.settings.max_running - len(self.store.in_states(*ACTIVE))
        for row in self.store.queue()[: max(0, free)]:
            self.submit(row)

    def submit(self, row: JobRow) -> None:
        """Hand a queued job to Ray (``raykd run SPEC --job-id ID``)."""
        path = spec_file(self.settings, row.id)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(row.spec))
        submission = row.id if row.attempts == 0 else f"{row.id}.r{row.attempts}"
        try:
            self.ray.submit(submission_id=submission, spec_path=path, job_id=row.id, env={})
        except Exception as err:  # noqa: BLE001 - Ray down or refused: the job waits
            log.warning("could not submit %s to Ray: %s", row.id, err)
            self.store.update(row.id, note=f"waiting: Ray refused the submission ({str(err)[:200]})")
            return
        self.store.update(row.id, state="pending", submission_id=submission, attempts=row.attempts + 1,
                          note=None, error=None, finished_at=None)

    def follow(self, row: JobRow) -> None:
        """Ingest new events, then derive the job's state with Ray's view of its driver."""
        job_dir = self.settings.storage / row.id
        # Ray first, the file second: a driver writes its final event before it exits, so
        # when Ray says it ended, that event is already in the file we read next.
        ray_state = self.ray.status(row.submission_id) if row.submission_id else None
        self.store.add_events(row.id, read_events(job_dir / EVENTS_FILE, after=row.last_seq))
        events = [parse_event(body) for _, _, body in self.store.events(row.id)]
        started = [e for e in events if e.type == "job_started"]
        this_attempt = bool(started) and started[-1].attempt >= row.attempts
        status = job_status(events if this_attempt else [], process_alive=ray_state not in RAY_TERMINAL | {None})
        fields: dict[str, Any] = {"last_seq": events[-1].seq if events else 0}
        if this_attempt:
            fields.update(stage=status.stage, progress=status.progress, latest_metrics=status.latest_metrics)
            fields["started_at"] = row.started_at or started[-1].time
        state = status.state if this_attempt else "pending"
        first_look = row.id not in self._seen and (row.started_at or 0) < self.started_at
        self._seen.add(row.id)
        if first_look and row.state == "running":  # it ran while no service watched it
            fields["note"] = "reconciled after a service restart: the job was still running on Ray"
        if state in ("succeeded", "failed", "cancelled") and this_attempt and status.error != DIED_MESSAGE:
            if first_look and events[-1].time < self.started_at:
                fields["note"] = (f"reconciled after a service restart: the job ended ({state}) while "
                                  "the service was down")
            self._finish(row, state, status.error, job_dir, fields)
        elif ray_state in RAY_TERMINAL or (ray_state is None and row.submission_id):
            self._lost(row, ray_state, job_dir, fields)
        else:
            fields["state"] = "running" if this_attempt and state == "running" else "pending"
            self.store.update(row.id, **fields)

    def _finish(self, row: JobRow, state: str, error: str | None, job_dir: Path,
                fields: dict[str, Any]) -> None:
        if state == "failed" and row.cancel_requested:
            state = "cancelled"
        self.store.update(row.id, state=state, error=error, finished_at=time.time(),
                          result=result_summary(job_dir) if state == "succeeded" else None, **fields)

    def _lost(self, row: JobRow, ray_state: str | None, job_dir: Path, fields: dict[str, Any]) -> None:
        """Ray says the driver ended (or forgot it) and the events have no final word."""
        if row.cancel_requested:
            self.store.update(row.id, state="cancelled", error="cancelled", finished_at=time.time(), **fields)
            return
        why = (f"Ray reports the job {ray_state} without a final event (driver killed or crashed)"
               if ray_state else "the Ray cluster no longer knows this job (head restarted or lost)")
        self.store.update(row.id, state="failed", finished_at=time.time(),
                          error=f"{why}; retry resumes it from what it finished", note=why, **fields)
