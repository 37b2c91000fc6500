"""What both student runners share: the run's identity, its events, its result.

A student trains on Ray Train (:mod:`raykd.train.trainer`: a ``TorchTrainer`` per
student, N DDP workers), on the job's long-lived student actor (:mod:`raykd.train.actor`:
one process reused by every single-worker student of a job), or in the driver's own
process (:mod:`raykd.train.driver`). Either way the driver turns each epoch's report into
an ``epoch`` event (:class:`EpochReports` for the two single-process runners), a worker
death into ``student_restarted``, and the last state's best weights into the student's file.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray

from raykd.core.events import Epoch, StudentRestarted
from raykd.core.jobdir import publish_file
from raykd.train.loop import LoopData
from raykd.train.state import BEST_FILE, Progress, load_progress

KEEP = 2
"""State directories kept per run (the newest): the latest and the one before it."""


@dataclass
class StudentResult:
    """The best checkpoint of one student run and its per-epoch metrics."""

    checkpoint: Path
    history: list[dict[str, Any]]
    best_val_accuracy: float
    best_epoch: int
    seconds: float
    costs: dict[str, float] = field(default_factory=dict)
    """Seconds of the fit outside its training steps, by what (the student actor's and the
    driver's runners: ``validation``, ``state_save``; the actor's ``actor_start``, waiting
    for its process)."""


@dataclass
class StudentRun:
    """What identifies one student fit and where its events go (driver side)."""

    student: int
    generation: int
    label: str
    epochs: int
    sink: Any = None  # raykd.core.events.JsonlSink, or None for no events
    resume_from: str | None = None  # a state directory of an earlier run of this job
    max_failures: int = 2
    fault: dict[str, Any] | None = None  # the spec's student faults (raykd.core.faults)

    def epoch_event(self, metrics: dict[str, Any], checkpoint: str | None) -> None:
        """Emit one ``epoch`` event from a worker's report (numbers only; none without a sink)."""
        if self.sink is None:
            return
        values = {k: float(v) for k, v in metrics.items()
                  if isinstance(v, int | float) and k != "epoch"}
        self.sink.emit(Epoch(student=self.student, generation=self.generation, label=self.label,
                             epoch=int(metrics.get("epoch", 0)) or 1, epochs=self.epochs,
                             metrics=values, checkpoint=checkpoint))

    def restarted(self, error: BaseException | None) -> None:
        """Emit ``student_restarted`` with the error's first line (none without a sink)."""
        if self.sink is None:
            return
        message = str(error).strip()
        text = f"{type(error).__name__}: {message.splitlines()[0] if message else ''}"
        self.sink.emit(StudentRestarted(student=self.student, generation=self.generation,
                                        error=text[:500]))


def loop_data(refs: dict[str, Any]) -> LoopData:
    """The :class:`~raykd.train.loop.LoopData` of a worker, from ``worker_inputs``' refs.

    The arrays are zero-copy views of the object store's copies (read-only).
    """
    return LoopData(
        **{k: ray.get(v) for k, v in refs["data"].items()},
        teacher_train=(ray.get(refs["teacher_train"])
                       if refs.get("teacher_train") is not None else None),
        teacher_actors=refs.get("teacher_actors"),
        teacher_replicas=refs.get("teacher_replicas", False),
        teacher_local=refs.get("teacher_local"),
    )


def published(directory: Path, progress: Progress, out: Path, *, seconds: float) -> StudentResult:
    """The best weights of a finished state ``directory`` copied to ``out``; its result."""
    out.parent.mkdir(parents=True, exist_ok=True)
    publish_file(directory / BEST_FILE, out)
    best_val = float("nan") if progress.best_val is None else progress.best_val
    return StudentResult(checkpoint=out, history=progress.history, best_val_accuracy=best_val,
                         best_epoch=progress.best_epoch, seconds=seconds)


@dataclass
class EpochReports:
    """The driver's side of one single-process fit (actor or driver runner): each epoch's
    report ``{"metrics", "checkpoint", "costs"}`` becomes an ``epoch`` event, the newest
    :data:`KEEP` state directories it recorded are kept (older ones pruned: superseded),
    and the costs are summed."""

    run: StudentRun
    last: str | None = None  # the newest state recorded (or the one resumed from)
    costs: dict[str, float] = field(default_factory=dict)
    kept: list[str] = field(default_factory=list)

    def take(self, report: dict[str, Any]) -> None:
        """Record one epoch's report: its event, its state (pruning older ones), its costs."""
        last = self.last = report["checkpoint"]
        for key, seconds in report.get("costs", {}).items():
            self.costs[key] = self.costs.get(key, 0.0) + seconds
        self.run.epoch_event(report["metrics"], last)
        self.kept = [k for k in self.kept if k != last] + [last]
        for old in self.kept[:-KEEP]:  # states the driver has superseded (recorded newer)
            shutil.rmtree(old, ignore_errors=True)
        self.kept = self.kept[-KEEP:]

    def result(self, out: Path, *, name: str, seconds: float) -> StudentResult:
        """The fit's result: the last state's best weights published to ``out``, the costs.

        Raises:
            RuntimeError: when no state was reported (nor resumed from).
        """
        if self.last is None:
            raise RuntimeError(f"student {name!r} reported no state")
        result = published(Path(self.last), load_progress(self.last), out, seconds=seconds)
        result.costs = self.costs
        return result
