"""The context of one job: its id, its directory, its event stream, and what earlier runs did.

A job is identified by its id and lives in ``<storage>/<job_id>`` (or an explicit
``--job-dir``): one directory, one job. :func:`open_job` claims a new directory, or
reopens one that holds the *same* spec (same ``spec_hash``) to resume it, and refuses one
that holds another spec's job or another run's files. A resumed run is the next
``attempt``; the events of the earlier attempts tell it what is finished.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from raykd.core.driver_lock import DriverLock
from raykd.core.errors import JobDirError, SpecError
from raykd.core.events import (
    SUBMISSION_ENV,
    Epoch,
    JobStarted,
    JsonlSink,
    Message,
    StageFinished,
    StageStarted,
    StudentFinished,
    read_events,
)
from raykd.core.faults import ALLOW_ENV
from raykd.core.faults import allowed as faults_allowed
from raykd.core.jobdir import (
    JobLayout,
    StorageLayout,
    absolute,
    check_job_id,
    claim_job_dir,
    new_job_id,
    resolve_spec_paths,
    spec_hash,
)
from raykd.core.spec import JobSpec

Log = Callable[[str], None]


@dataclass
class Timer:
    """Wall time of each named stage, in seconds (``student_*``: parts of ``students``)."""

    stages: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - start)

    def add(self, name: str, seconds: float) -> None:
        """Count ``seconds`` more under ``name``."""
        self.stages[name] = self.stages.get(name, 0.0) + seconds


@dataclass
class Job:
    """What the stages of one run share: the spec, the directory, the events, the result.

    ``sink`` is None for internal uses without an event stream (benchmarks' teacher
    preparation); ``earlier`` holds the events of this job id's earlier attempts.
    """

    spec: JobSpec
    job_dir: Path
    log: Log = print
    job_id: str = ""
    sink: JsonlSink | None = None
    attempt: int = 1
    earlier: list[Any] = field(default_factory=list)
    timer: Timer = field(default_factory=Timer)
    result: dict[str, Any] = field(default_factory=dict)
    worker: Any = None  # the job's student actor (student_runner "actor"), started once
    student_runner: Literal["driver", "actor", "train"] | None = None  # decided once Ray is up
    in_process_teachers: bool = False  # online teachers in the student workers' processes
    lock: DriverLock | None = None  # held from open_job until close()
    started_seq: int = 0  # the seq of this attempt's job_started (0 without a stream)

    @property
    def layout(self) -> JobLayout:
        """The names of the files in :attr:`job_dir`."""
        return JobLayout(self.job_dir)

    def close(self) -> None:
        """Release the job directory's driver lock (the end of the process does it too)."""
        if self.lock is not None:
            self.lock.release()
            self.lock = None

    def emit(self, event: Any) -> Any:
        """Append ``event`` to the job's stream; the event as written (numbered), or None
        without a stream."""
        return self.sink.emit(event) if self.sink is not None else None

    def say(self, text: str) -> None:
        """A line for the user: printed by ``log`` and kept as a ``message`` event."""
        self.log(text)
        self.emit(Message(text=text))

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time a stage and mark its start and end in the event stream."""
        self.emit(StageStarted(stage=name))
        start = time.perf_counter()
        with self.timer.stage(name):
            yield
        self.emit(StageFinished(stage=name, seconds=time.perf_counter() - start))

    def finished_student(self, student: int, generation: int) -> dict[str, Any] | None:
        """The record of a student an earlier attempt finished, when its files are intact."""
        done = any(isinstance(e, StudentFinished) and (e.student, e.generation) == (student, generation)
                   for e in self.earlier)
        path = self.student_record(student, generation)
        if not done or not path.exists():
            return None
        record = json.loads(path.read_text())
        return record if Path(record["checkpoint"]).is_file() else None

    def student_record(self, student: int, generation: int) -> Path:
        return self.layout.student_record(student, generation)

    def resume_point(self, student: int, generation: int) -> str | None:
        """The latest state directory an earlier attempt reported for this student, if intact."""
        for e in reversed(self.earlier):
            if isinstance(e, Epoch) and (e.student, e.generation) == (student, generation) and e.checkpoint:
                if (Path(e.checkpoint) / "progress.json").is_file():
                    return e.checkpoint
        return None


def open_job(spec: JobSpec, *, job_id: str | None = None, job_dir: Path | None = None,
             kind: str = "run", log: Log = print, total_epochs: int = 0, students: int = 0) -> Job:
    """Claim (or reopen to resume) the job's directory and start its event stream.

    The directory is ``job_dir`` when given, else ``<storage>/<job_id>``; the id is
    generated when neither is given. A directory holding this same spec resumes (the next
    attempt); one holding another spec, or files of no job, raises :class:`JobDirError`, and
    so does one whose driver lock another running driver holds (:class:`DriverLock`: the
    returned job holds it until :meth:`Job.close`).
    ``job_started`` records ``$RAYKD_SUBMISSION_ID`` (the control plane's submission id of
    this attempt) when it is set.
    """
    spec = resolve_spec_paths(spec)
    if spec.faults is not None and not faults_allowed():
        raise SpecError(f"faults: fault injection is off here; set {ALLOW_ENV}=1 in the "
                        "environment of `raykd run` (and of the Ray cluster's drivers) to allow it")
    if job_id is not None:
        check_job_id(job_id)
    if job_dir is not None:
        job_dir = absolute(job_dir)
        job_id = job_id or job_dir.name
    else:
        job_id = job_id or new_job_id(spec.name)
        job_dir = StorageLayout(absolute(spec.storage)).job(job_id).root
    digest = spec_hash(spec)
    mine = spec.model_dump_json(indent=2)
    if JobLayout(job_dir).spec.is_file():
        _check_same_spec(job_dir, spec, digest)
    else:
        claim_job_dir(job_dir, mine)
    lock = DriverLock(job_dir, job_id)  # one driver per job: refused here, before any event
    try:
        earlier: list[Any] = read_events(JobLayout(job_dir).events)
        sink = JsonlSink(JobLayout(job_dir).events, job_id)
    except BaseException:
        lock.release()
        raise
    attempt = 1 + sum(isinstance(e, JobStarted) for e in earlier)
    job = Job(spec=spec, job_dir=job_dir, log=log, job_id=job_id, sink=sink, attempt=attempt,
              earlier=earlier, lock=lock)
    started = job.emit(JobStarted(
        name=spec.name, kind=kind, spec_hash=digest, attempt=attempt,  # type: ignore[arg-type]
        total_epochs=total_epochs, students=students, host=socket.gethostname(), pid=os.getpid(),
        submission_id=os.environ.get(SUBMISSION_ENV) or None))
    job.started_seq = started.seq if started is not None else 0
    return job


def _check_same_spec(job_dir: Path, spec: JobSpec, digest: str) -> None:
    """Refuse to resume a directory whose job was started from another spec."""
    try:
        stored = JobSpec.model_validate_json(JobLayout(job_dir).spec.read_text())
    except ValueError:
        raise JobDirError(f"{job_dir} holds a spec.json that is not a raykd spec; give another "
                          f"--job-id / --job-dir") from None
    if spec_hash(stored) != digest:
        raise JobDirError(
            f"job {job_dir.name!r} in {job_dir} was started from a different spec; a job id "
            f"resumes only its own spec: give a new --job-id (or --job-dir), or delete that directory"
        )
