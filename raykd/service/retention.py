"""Retention: finished jobs older than ``RAYKD_RETENTION_DAYS`` are deleted by the service.

A background thread of the service (not the request path, not the scheduler's tick) looks
once at start-up and then every ``RETENTION_PERIOD_S``: each job in a final state that
finished more than ``retention_days`` ago loses its record, labels, events, directory and
kept spec, and Ray forgets its submissions (best effort), as ``DELETE /api/v1/jobs/{id}``
does. Each deletion is an audit entry (actor ``service``, action ``retention``).
"""

from __future__ import annotations

import logging
import shutil
import threading
import time

from sqlalchemy import select

from raykd.core.states import FINAL_STATES
from raykd.service.audit import record
from raykd.service.ray_jobs import RayJobs, RayUnavailable
from raykd.service.scheduler import spec_file, submission_ids
from raykd.service.settings import Settings
from raykd.service.store import Store
from raykd.service.tables import JobRow

log = logging.getLogger("raykd.service")
RETENTION_PERIOD_S = 3600.0
BATCH = 200  # jobs deleted per query, so that one look never holds a long transaction


def expired(store: Store, *, older_than: float, limit: int = BATCH) -> list[str]:
    """Ids of final jobs that finished before ``older_than`` (Unix time), oldest first."""
    q = (select(JobRow.id).where(JobRow.state.in_(FINAL_STATES), JobRow.finished_at.is_not(None),
                                 JobRow.finished_at < older_than)
         .order_by(JobRow.finished_at.asc()).limit(limit))
    with store.sessions() as s:
        return list(s.scalars(q))


def sweep(settings: Settings, store: Store, ray: RayJobs | None, lock: threading.Lock,
          now: float | None = None) -> list[str]:
    """Delete every job past retention (none when ``retention_days`` is unset); their ids."""
    if settings.retention_days is None:
        return []
    cutoff = (time.time() if now is None else now) - settings.retention_days * 86400
    deleted: list[str] = []
    while batch := [i for i in expired(store, older_than=cutoff) if i not in deleted]:
        for job_id in batch:
            with lock:  # a retry or delete of this job does not interleave
                row = store.get(job_id)
                if row is None or row.state not in FINAL_STATES or (row.finished_at or cutoff) >= cutoff:
                    continue
                store.delete(job_id)
            _remove_files(settings, row, ray)
            record(store, "service", "retention", job_id,
                   detail={"finished_at": row.finished_at, "retention_days": settings.retention_days})
            deleted.append(job_id)
        if len(batch) < BATCH:
            break
    if deleted:
        log.info("retention: deleted %d job(s) finished over %g days ago", len(deleted), settings.retention_days)
    return deleted


def _remove_files(settings: Settings, row: JobRow, ray: RayJobs | None) -> None:
    """The job's directory and kept spec, and (best effort) Ray's records of it."""
    shutil.rmtree(settings.layout.job(row.id).root, ignore_errors=True)
    spec_file(settings, row.id).unlink(missing_ok=True)
    if ray is None:
        return
    for sid in submission_ids(row):
        try:
            ray.delete(sid)
        except RayUnavailable:
            return


class Retention:
    """The service's retention thread: :func:`sweep` at start and every ``period_s``."""

    def __init__(self, settings: Settings, store: Store, ray: RayJobs | None, lock: threading.Lock,
                 period_s: float = RETENTION_PERIOD_S) -> None:
        self.settings, self.store, self.ray, self.lock, self.period_s = settings, store, ray, lock, period_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="raykd-retention", daemon=True)

    def start(self) -> None:
        if self.settings.retention_days is not None:
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                sweep(self.settings, self.store, self.ray, self.lock)
            except Exception:  # noqa: BLE001 - keep the service up; the next look retries
                log.exception("retention: deleting expired jobs failed")
            self._stop.wait(self.period_s)
