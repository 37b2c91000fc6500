"""One attempt of a job, followed at a cost per new event: a byte offset and an incremental status.

The scheduler used to re-read the whole ``events.jsonl`` and re-parse the job's whole
stored history on every tick. Now :func:`raykd.core.events.read_new_events` reads from the
byte offset where the last read stopped (``jobs.events_offset``), and :class:`AttemptTracker` keeps
what :func:`raykd.core.status.job_status` derives, updated one event at a time. The tracker
lives in the follower's memory (:mod:`raykd.service.follower`) and is rebuilt once from the
database after a restart.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from raykd.core.events import (
    Epoch,
    JobFailed,
    JobFinished,
    JobStarted,
    StudentFinished,
    Trial,
)
from raykd.core.status import DIED_MESSAGE, EpochsDone, OpenStages
from raykd.service.tables import JobRow


@dataclass
class AttemptTracker:
    """The status of submission ``submission_id``'s attempt, fed the job's events in seq order.

    The same rules as :func:`this_attempt` and
    :func:`raykd.core.status.job_status` (tests compare them): the attempt starts at the last
    ``job_started`` carrying this submission id (files from before that field: the last
    ``job_started``, if its attempt number is at least ``attempts``) and ends before the
    next ``job_started``; progress counts every attempt's epochs up to that end.
    """

    submission_id: str | None
    attempts: int
    last_seq: int = 0
    start: JobStarted | None = None
    end: Any = None  # the attempt's final event (JobFinished / JobFailed)
    cut: bool = False  # a later attempt began: what follows is not this attempt's
    any_sid: bool = False
    stages: OpenStages = field(default_factory=OpenStages)
    epochs: EpochsDone = field(default_factory=EpochsDone)
    last_epoch: Epoch | None = None
    after_cut: list[Any] = field(default_factory=list)

    def feed(self, event: Any) -> bool:
        """Take one event (one already seen is ignored); True when it was new."""
        if event.seq <= self.last_seq:
            return False
        self.last_seq = event.seq
        if isinstance(event, JobStarted):
            self._started(event)
        elif not self.cut:
            self._take(event)
        elif isinstance(event, Epoch | StudentFinished | Trial):
            self.after_cut.append(event)  # counts if this submission's driver starts once more
        return True

    def _started(self, e: JobStarted) -> None:
        if e.submission_id is not None:
            if not self.any_sid and self.start is not None and self.start.submission_id is None:
                self.start = None  # an id-less start is no longer a candidate once ids appear
            self.any_sid = True
            if e.submission_id == self.submission_id:
                self._begin(e)
            elif self.start is not None:
                self.cut = True
        elif self.any_sid:
            if self.start is not None:
                self.cut = True
        else:
            self._begin(e)  # a file from before submission ids: the last start is the attempt

    def _begin(self, e: JobStarted) -> None:
        for earlier in self.after_cut:
            self._take(earlier)
        self.start, self.end, self.cut, self.after_cut = e, None, False, []
        self.stages = OpenStages()

    def _take(self, e: Any) -> None:
        if self.epochs.take(e):
            if isinstance(e, Epoch):
                self.last_epoch = e
        elif isinstance(e, JobFinished | JobFailed):
            if self.start is not None:
                self.end = e
        else:
            self.stages.take(e)

    @property
    def mine(self) -> bool:
        """Whether this submission's driver has started (its attempt is in the events)."""
        if self.start is None:
            return False
        return self.start.submission_id is not None or self.start.attempt >= self.attempts

    def progress(self) -> float:
        """The attempt's progress: 1 once it finished, else :class:`EpochsDone`'s fraction."""
        start = self.start
        if start is not None and start.total_epochs > 0 and isinstance(self.end, JobFinished):
            return 1.0
        return self.epochs.fraction(self.start)

    def state(self, process_alive: bool | None) -> tuple[str, str | None]:
        """(state, error) of the attempt: how :func:`raykd.core.status.job_status` would end it."""
        if isinstance(self.end, JobFinished):
            return "succeeded", None
        if isinstance(self.end, JobFailed):
            return ("cancelled" if self.end.kind == "cancelled" else "failed"), self.end.message
        if process_alive is False:
            return "failed", DIED_MESSAGE
        return "running", None

    def fields(self) -> dict[str, Any]:
        """The job row's columns this attempt decides (stage, progress, metrics, start time)."""
        assert self.start is not None
        ended = isinstance(self.end, JobFinished)
        return {"stage": None if ended else self.stages.current,
                "progress": self.progress(),
                "latest_metrics": dict(self.last_epoch.metrics) if self.last_epoch else {},
                "started_at": self.start.time}


def this_attempt(events: list[Any], row: JobRow) -> int | None:
    """Index in ``events`` of the ``job_started`` of the attempt ``row`` submitted last, or None.

    The driver records its submission id (``RAYKD_SUBMISSION_ID``) in ``job_started``: the
    attempt is the one whose id equals ``row.submission_id``. Attempt counts are not
    compared, since an attempt that died before its first event leaves none. Event files
    written before that field existed fall back to comparing the driver's attempt number
    with the service's.
    """
    started = [(i, e) for i, e in enumerate(events) if e.type == "job_started"]
    sid = row.submission_id
    mine = [i for i, e in started if e.submission_id is not None and e.submission_id == sid]
    if mine:
        return mine[-1]
    if not started or any(e.submission_id for _, e in started):
        return None  # this submission's driver has not started (yet)
    i, last = started[-1]
    return i if last.attempt >= row.attempts else None
