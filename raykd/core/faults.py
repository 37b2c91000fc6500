"""Fault injection for reliability tests: off by default, refused unless the runner allows it.

A spec may carry ``faults:`` (:class:`FaultSpec`). ``raykd run`` refuses it unless its
environment has ``RAYKD_ALLOW_FAULT_INJECTION=1``; the control plane refuses it (422)
unless its operator set ``RAYKD_ALLOW_FAULT_INJECTION=true``, and then passes the switch
to the drivers it starts. Each fault fires once per job: a marker file in the job
directory records that it fired, so a process that Ray restarts does not fire it again.

The points (each a real ``SIGKILL`` of the process, as a crash or the OOM killer would):

- ``kill_teacher``/``kill_teacher_at_request``: that teacher's actor dies on its n-th
  logits request; Ray restarts it with its trained weights and retries the request.
- ``kill_student_at_step``: each student's worker dies once in the middle of an epoch,
  before optimizer step n (counted from the start of its run); it resumes from its last
  saved epoch.
- ``kill_student_after_epoch``: the same, right after epoch n was reported.
- ``epoch_sleep_s``: a slow student (a pause after each epoch), so that a watcher sees the
  epochs arrive one by one, or a node can be killed while a job runs.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

ALLOW_ENV = "RAYKD_ALLOW_FAULT_INJECTION"


class FaultSpec(BaseModel):
    """Faults to inject (testing only; see :mod:`raykd.core.faults`)."""

    model_config = ConfigDict(extra="forbid")

    kill_teacher: int | None = Field(default=None, ge=0,
                                     description="Index of the teacher whose actor is killed once.")
    kill_teacher_at_request: int = Field(default=1, ge=1,
                                         description="Its n-th logits request kills it.")
    kill_student_at_step: int | None = Field(
        default=None, ge=1, description="Each student's worker dies once before this optimizer step.")
    kill_student_after_epoch: int | None = Field(
        default=None, ge=1, description="Each student's worker dies once right after this epoch.")
    epoch_sleep_s: float = Field(default=0.0, ge=0, le=60,
                                 description="Pause after each student epoch (a slow student).")


def allowed() -> bool:
    """Whether this process may inject faults (``RAYKD_ALLOW_FAULT_INJECTION=1``)."""
    return os.environ.get(ALLOW_ENV, "").strip().lower() in ("1", "true", "yes")


def fire_once(marker: str | None) -> None:
    """Kill this process with SIGKILL, unless ``marker`` exists (then do nothing).

    The marker is written first (with this process id), so the fault fires once per job.
    """
    if not marker or os.path.exists(marker):
        return
    Path(marker).write_text(str(os.getpid()))
    os.kill(os.getpid(), signal.SIGKILL)


def student_fault(faults: FaultSpec | None, marker: Path) -> dict[str, Any] | None:
    """What a student worker needs of ``faults`` (None: nothing to inject)."""
    if faults is None or (faults.kill_student_at_step is None
                          and faults.kill_student_after_epoch is None and not faults.epoch_sleep_s):
        return None
    return {"kill_at_step": faults.kill_student_at_step,
            "kill_after_epoch": faults.kill_student_after_epoch,
            "epoch_sleep_s": faults.epoch_sleep_s, "marker": str(marker)}


def after_epoch(fault: dict[str, Any] | None, epoch: int) -> None:
    """A student worker's fault point after ``epoch`` was reported."""
    if not fault:
        return
    if fault.get("epoch_sleep_s"):
        time.sleep(float(fault["epoch_sleep_s"]))
    if fault.get("kill_after_epoch") == epoch:
        fire_once(fault.get("marker"))


def step_hook(fault: dict[str, Any] | None) -> Any:
    """A callable ``hook(step)`` for the training loop, or None when no step fault is set."""
    at = (fault or {}).get("kill_at_step")
    if at is None:
        return None
    marker = fault.get("marker") if fault else None

    def hook(step: int) -> None:
        if step + 1 == at:
            fire_once(marker)

    return hook


def teacher_fault(faults: FaultSpec | None, index: int, marker: Path) -> dict[str, Any] | None:
    """What teacher ``index``'s actor needs of ``faults`` (None: nothing to inject)."""
    if faults is None or faults.kill_teacher != index:
        return None
    return {"kill_at_request": faults.kill_teacher_at_request, "marker": str(marker)}
