"""Typed job events and where they go: ``<job_dir>/events.jsonl``, one JSON object a line.

Every stage, teacher, epoch, trial and the end of a job is an event. The events file is
the job's observable state: the CLI prints from it, the control plane follows it (and
serves it as Server-Sent Events, with ``seq`` as the event id), and
:func:`raykd.core.status.job_status` derives a job's status from the events alone.

Writers: the driver (stages, teachers, students, the end), the Ray Train controller
(one ``epoch`` per report, through a callback) and Tune's driver loop (``trial``). They
append through :class:`JsonlSink`, which takes an exclusive ``flock`` on the file, numbers
the event one past the last line's ``seq`` and writes one whole line, flushed. A reader
tailing the file only ever sees whole lines, numbered 1, 2, 3... with no gap.

Torch-free and Ray-free: importing this module loads pydantic only.

Example lines::

    {"seq":1,"time":1764590000.1,"job_id":"digits-1","type":"job_started","name":"digits",...}
    {"seq":5,"time":1764590009.8,"job_id":"digits-1","type":"epoch","student":0,"epoch":1,...}
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from raykd.core.states import TERMINAL_EVENTS

SUBMISSION_ENV = "RAYKD_SUBMISSION_ID"  # the control plane's submission id, in the driver's env


TextF1 = Annotated[float | None, Field(description="Text classification only.")]
"""An event's ``test_macro_f1`` (teacher_ready, student_finished)."""
SpanF1 = Annotated[float | None, Field(
    description="Span extraction only: SQuAD v2.0 F1 (percent) on test, no-answer threshold "
    "chosen on val.")]
"""An event's ``test_f1``; with :data:`SpanExact`, filled by
:func:`raykd.engine.scores.span_event_fields`. Annotated types rather than a base model keep
each event's key order (and so its JSON line) as it was."""
SpanExact = Annotated[float | None, Field(
    description="Span extraction only: SQuAD v2.0 exact match (percent) on test, as test_f1.")]
"""An event's ``test_exact``."""


class _Event(BaseModel):
    model_config = ConfigDict(extra="forbid")

    seq: int = Field(default=0, ge=0, description="Position in the job's stream, from 1 (set by the sink).")
    time: float = Field(default_factory=time.time, description="Unix time of the event.")
    job_id: str = Field(default="", description="The job this event belongs to (set by the sink).")


class JobStarted(_Event):
    """A run of the job began (``attempt`` counts reruns of the same job id)."""

    type: Literal["job_started"] = "job_started"
    name: str
    kind: Literal["run", "sweep"] = "run"
    spec_hash: str = Field(description="sha256 of the normalized spec: the job's identity.")
    attempt: int = Field(ge=1, description="1 for the first run, n for the n-th resume.")
    total_epochs: int = Field(ge=0, description="Student epochs of the whole job (progress).")
    students: int = Field(ge=0, description="Student models to train (methods x generations).")
    host: str = ""
    pid: int = 0
    submission_id: str | None = Field(
        default=None, description="Ray's submission id of this attempt when the control plane "
        "submitted it (env RAYKD_SUBMISSION_ID): the service follows only the attempt it "
        "submitted, whatever the count of earlier attempts. None for a run started by hand "
        "(and in event files written before this field existed).")


class StageStarted(_Event):
    type: Literal["stage_started"] = "stage_started"
    stage: str = Field(description="data, ray_init, teachers, teacher_logits, students, ...")


class StageFinished(_Event):
    type: Literal["stage_finished"] = "stage_finished"
    stage: str
    seconds: float = Field(ge=0)


class TeacherReady(_Event):
    """A teacher is trained (or loaded) and evaluated."""

    type: Literal["teacher_ready"] = "teacher_ready"
    index: int = Field(ge=0)
    trained: bool = Field(description="True when raykd trained it in this run.")
    checkpoint: str
    val_accuracy: float | None = None
    test_accuracy: float | None = None
    test_macro_f1: TextF1 = None
    test_f1: SpanF1 = None
    test_exact: SpanExact = None


class Epoch(_Event):
    """One epoch of one student, reported by the Ray Train controller (driver side)."""

    type: Literal["epoch"] = "epoch"
    student: int = Field(ge=0, description="Index of the method entry.")
    generation: int = Field(default=1, ge=1)
    label: str = ""
    epoch: int = Field(ge=1)
    epochs: int = Field(ge=1)
    metrics: dict[str, float | None] = Field(default_factory=dict)
    checkpoint: str | None = Field(default=None, description="Where this epoch's state is stored.")


class StudentRestarted(_Event):
    """Student workers failed; Ray Train restarts them from the last checkpoint."""

    type: Literal["student_restarted"] = "student_restarted"
    student: int = Field(ge=0)
    generation: int = Field(default=1, ge=1)
    error: str = ""


class StudentFinished(_Event):
    type: Literal["student_finished"] = "student_finished"
    student: int = Field(ge=0)
    generation: int = Field(default=1, ge=1)
    label: str = ""
    checkpoint: str
    val_accuracy: float | None = None
    test_accuracy: float | None = None
    test_macro_f1: TextF1 = None
    test_f1: SpanF1 = None
    test_exact: SpanExact = None
    reused: bool = Field(default=False, description="Taken from an earlier run of this job id.")


class Trial(_Event):
    """One report of one sweep trial (Tune callback, driver side)."""

    type: Literal["trial"] = "trial"
    trial_id: str
    config: dict[str, Any] = Field(default_factory=dict)
    metrics: dict[str, float | None] = Field(default_factory=dict)
    done: bool = False


class Message(_Event):
    """A line for the user that is not a stage (a warning, a note)."""

    type: Literal["message"] = "message"
    text: str


class JobFinished(_Event):
    type: Literal["job_finished"] = "job_finished"
    result: str = Field(description="Path of result.json (or sweep.json).")
    seconds: float = Field(ge=0)


class JobFailed(_Event):
    """The run ended without a result: the user's error, a bug (with traceback), or a stop."""

    type: Literal["job_failed"] = "job_failed"
    kind: Literal["user_error", "bug", "cancelled"]
    message: str
    traceback: str | None = None


Event = Annotated[
    JobStarted | StageStarted | StageFinished | TeacherReady | Epoch | StudentRestarted
    | StudentFinished | Trial | Message | JobFinished | JobFailed,
    Field(discriminator="type"),
]
EVENT_ADAPTER: TypeAdapter[Any] = TypeAdapter(Event)


def parse_event(line: str | bytes | dict[str, Any]) -> Any:
    """One event from a JSON line (or mapping)."""
    if isinstance(line, dict):
        return EVENT_ADAPTER.validate_python(line)
    return EVENT_ADAPTER.validate_json(line)


def _line_seq(line: bytes) -> int | None:
    """``seq`` of one line, or None for a blank or torn line (a writer killed mid-line)."""
    try:
        return int(json.loads(line)["seq"])
    except (ValueError, KeyError, TypeError):
        return None


def _last_seq(f: Any) -> int:
    """``seq`` of the file's last whole event (0 when none); ``f`` is open for reading.

    Reads backwards in blocks, so a line of any length is found whole; torn lines are skipped.
    """
    pos = f.seek(0, os.SEEK_END)
    carry = b""
    while pos > 0:
        step = min(pos, 65536)
        pos -= step
        f.seek(pos)
        lines = (f.read(step) + carry).split(b"\n")
        carry = lines.pop(0) if pos > 0 else b""  # may be the end of a line that starts earlier
        for line in reversed(lines):
            seq = _line_seq(line) if line.strip() else None
            if seq is not None:
                return seq
    return 0


def _torn_end(f: Any) -> bool:
    """True when the file's last line has no newline (its writer was killed mid-line)."""
    end = f.seek(0, os.SEEK_END)
    if end == 0:
        return False
    f.seek(end - 1)
    return f.read(1) != b"\n"


class JsonlSink:
    """Appends events to a JSON-lines file; safe for several writer processes on one file.

    Picklable (only the path and job id travel), so a Ray Train callback can carry it.
    """

    def __init__(self, path: str | Path, job_id: str) -> None:
        self.path = str(path)
        self.job_id = job_id

    def emit(self, event: Any) -> Any:
        """Number, stamp and append ``event``; return it as written."""
        with open(self.path, "a+b") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                event = event.model_copy(update={"seq": _last_seq(f) + 1, "job_id": self.job_id})
                start = b"\n" if _torn_end(f) else b""  # never glue onto a killed writer's line
                f.write(start + event.model_dump_json().encode() + b"\n")
                f.flush()
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)
        return event


def read_events(path: str | Path, after: int = 0) -> list[Any]:
    """Every whole event in the file with ``seq > after`` (a partial last line is skipped)."""
    path = Path(path)
    if not path.exists():
        return []
    out = []
    for line in path.read_bytes().split(b"\n"):
        if not line.strip():
            continue
        try:
            event = parse_event(line)
        except ValueError:  # a line still being written by another process
            continue
        if event.seq > after:
            out.append(event)
    return out


@dataclass
class Read:
    """What one :func:`read_new_events` call found, and what it cost."""

    events: list[Any]
    offset: int  # where the next read starts
    bytes_read: int
    lines_parsed: int


def read_new_events(path: Path, offset: int) -> Read:
    """The whole events written to ``path`` after byte ``offset`` (each line read once: the
    control plane's follower and the driver's event tail read this way).

    Only complete lines are consumed (a line still being written stays for the next
    read); a torn line of a killed writer is skipped. A file shorter than ``offset`` was
    replaced: it is read again from its start (the caller skips seqs it already has).
    """
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed below
    except FileNotFoundError:
        return Read([], offset, 0, 0)
    with f:
        size = os.fstat(f.fileno()).st_size
        if size < offset:
            offset = 0
        f.seek(offset)
        data = f.read(size - offset)
    end = data.rfind(b"\n")
    if end < 0:
        return Read([], offset, len(data), 0)
    events, lines = [], 0
    for line in data[:end].split(b"\n"):
        if not line.strip():
            continue
        lines += 1
        try:
            events.append(parse_event(line))
        except ValueError:  # a torn line (its writer was killed mid-line)
            continue
    return Read(events, offset + end + 1, len(data), lines)


def follow(path: str | Path, *, after: int = 0, poll_s: float = 0.2,
           stop: Callable[[], bool] = lambda: False) -> Iterator[Any]:
    """Yield the events with ``seq > after`` as they are appended, until a terminal event or
    ``stop()`` (then what is written up to the end event); each line is read and parsed once
    (:func:`read_new_events`), however long the file grows."""
    path, seen, offset = Path(path), after, 0
    while True:
        stopping = stop()
        read = read_new_events(path, offset)
        offset = read.offset
        for event in read.events:
            if event.seq <= seen:
                continue  # before ``after``, or read again from a replaced file's start
            seen = event.seq
            yield event
            if event.type in TERMINAL_EVENTS:
                return  # what a straggler wrote after the end is not the job's
        if stopping:
            return
        time.sleep(poll_s)
