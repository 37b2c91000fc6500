"""A job's single-worker students in the driver's own process: no student process to start.

The student actor (:mod:`raykd.train.actor`) costs a job a fresh Python that imports torch
(~5 s on a 2-CPU machine: Ray's worker start, then the imports) before its first step;
when every teacher logit is cached there is nothing to hide that behind, and on a small
job it is more than the students' training. The driver has torch loaded already. Where it
runs on the very node the actor would (a local Ray it started: ``scaling.student_runner:
auto`` picks this runner there, :func:`raykd.engine.cluster.student_runner`), it trains
each student itself with what the actor runs: the same loop and per-epoch state saves
(:func:`raykd.train.actor.fit_epochs`), on the ``cpus_per_worker`` torch threads the actor
would have (the driver's own count is given back after each fit), and the same driver
side (:class:`~raykd.train.runs.EpochReports`: events, pruning, costs).

A fresh driver has not run an optimizer yet: the first one imports ``torch._dynamo``
(~2 s on 2 CPUs). :func:`start_warm_up` does it in a thread while the job loads its data
and starts Ray (mostly waiting on Ray's processes), as the actor does while it starts; the
first fit waits for it (``warm_up`` in the costs: ~0 when it finished in time).

What differs is what a death means: a killed driver is the job's end (``job_failed``, or
no event for SIGKILL), and the job resumes from the last saved epoch when it is run again
by its id; there is no in-job restart (``max_failures`` is the actor's and Ray Train's).
A loop error (bad data, NaN logits) is raised as it is, as the actor runner raises it.
"""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path
from typing import Any

import torch

from raykd.train.actor import fit_epochs, warm_up
from raykd.train.config import StudentConfig
from raykd.train.runs import EpochReports, StudentResult, StudentRun, published
from raykd.train.state import load_progress

_warming: threading.Thread | None = None


def start_warm_up() -> None:
    """Warm torch up (:func:`raykd.train.actor.warm_up`) in a daemon thread of this process,
    once; nothing when an optimizer already ran here."""
    global _warming
    if _warming is not None or "torch._dynamo" in sys.modules:
        return
    _warming = threading.Thread(target=_warm_up_quietly, name="raykd-warm-up", daemon=True)
    _warming.start()


def _warm_up_quietly() -> None:
    try:
        warm_up()
    except Exception:  # noqa: BLE001 - only a head start: the fit imports what failed here
        pass


def wait_warm_up() -> float:
    """Seconds spent waiting for :func:`start_warm_up`'s thread (0 when none runs)."""
    if _warming is None or not _warming.is_alive():
        return 0.0
    start = time.perf_counter()
    _warming.join()
    return time.perf_counter() - start


def train_student_driver(config: StudentConfig, *, refs: dict[str, Any], storage: Path, name: str,
                         out: Path, run: StudentRun) -> StudentResult:
    """Fit one student in this process; copy its best weights to ``out``.

    ``name`` must be new under ``storage`` (this attempt's own directory of states);
    ``refs`` as the actor takes them (:func:`raykd.train.runs.loop_data`).
    """
    start = time.time()
    last = run.resume_from
    if last is not None and load_progress(last).epoch >= run.epochs:
        return published(Path(last), load_progress(last), out, seconds=0.0)
    reports = EpochReports(run, last, costs={"warm_up": wait_warm_up(), "validation": 0.0,
                                             "state_save": 0.0})
    threads = torch.get_num_threads()  # the driver's own, given back after the fit
    try:
        for report in fit_epochs(config, refs, storage.resolve() / name, last, run.fault):
            reports.take(report)
    finally:
        torch.set_num_threads(threads)
    return reports.result(out, name=name, seconds=time.time() - start)
