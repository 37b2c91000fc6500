"""The Ray tasks of ``raykd bench quality``: a scenario's runs wired as a dataflow.

:func:`raykd.bench.quality_runs.train_run` runs as a ``num_cpus=1`` task per run; per
scenario (a student architecture distilled from one teacher ensemble):

1. the sweep: for each row, every grid point, one seed, fewer epochs; a tiny ``pick``
   task returns the grid point with the best validation accuracy (first on ties);
2. the finals: each row at its picked point, one run per seed (seed k is shared by all
   rows: paired comparisons). Born-again generation 2 is taught via KD by generation 1,
   which is the ``kd`` row's student of the same seed (of the picked ``kd`` sweep trial
   during the sweep).

Tasks take the pick results and generation 1 as object refs, so Ray starts each run as
soon as what it depends on is done; nothing waits on the driver.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import ray

from raykd.bench.quality_runs import ROWS, Grid, Row, RunData, RunJob, train_run


@ray.remote(num_cpus=1, max_retries=0)
def _run_task(
    job: RunJob,
    choice: Mapping[str, Any],
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    teacher: np.ndarray | None,
    gen1: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """:func:`train_run` as a task; ``choice`` (a pick result) carries the params."""
    data = RunData(x_train, y_train, x_val, y_val, x_test, y_test)
    return train_run(job, choice["params"], data, teacher, gen1)


@ray.remote(num_cpus=0, max_retries=0)
def _pick_task(*trials: dict[str, Any]) -> dict[str, Any]:
    """The sweep trial with the best validation accuracy (the first of equals)."""
    return max(trials, key=lambda t: t["val_accuracy"])


@dataclass
class Scenario:
    """A student architecture distilled from one dataset's teachers."""

    dataset: str
    name: str
    student: Mapping[str, Any]
    input_shape: tuple[int, ...]
    num_classes: int
    train: Mapping[str, Any]
    sweep_epochs: int
    seeds: tuple[int, ...]
    sweep_seed: int
    out: Path


@dataclass
class ScenarioRefs:
    """The object refs of one scenario's runs."""

    sweep: dict[str, list[ray.ObjectRef]] = field(default_factory=dict)
    picks: dict[str, ray.ObjectRef] = field(default_factory=dict)
    finals: dict[str, list[ray.ObjectRef]] = field(default_factory=dict)

    def runs(self) -> list[ray.ObjectRef]:
        """Every training run (sweep and finals), for progress."""
        return [r for refs in (*self.sweep.values(), *self.finals.values()) for r in refs]


def _job(
    sc: Scenario, row: Row, seed: int, *, sweep: bool, params: Mapping[str, float] | None = None
) -> RunJob:
    root = sc.out / "checkpoints" / sc.dataset / sc.name
    if sweep:
        point = "-".join(f"{k[0].upper()}{v:g}" for k, v in (params or {}).items())
        path = root / "sweep" / row.slug / f"{point}.safetensors"
        train = {**sc.train, "epochs": sc.sweep_epochs}
    else:
        path, train = root / row.slug / f"seed{seed}.safetensors", dict(sc.train)
    return RunJob(
        dataset=sc.dataset,
        scenario=sc.name,
        row=row,
        seed=seed,
        student=sc.student,
        input_shape=sc.input_shape,
        num_classes=sc.num_classes,
        train=train,
        checkpoint=str(path),
        sweep=sweep,
    )


def submit_scenario(
    sc: Scenario,
    grid: Grid,
    data: dict[str, ray.ObjectRef],
    teacher: ray.ObjectRef,
    rows: tuple[Row, ...] = ROWS,
) -> ScenarioRefs:
    """Submit every run of a scenario (sweep, picks, finals); returns their refs at once.

    ``data`` holds refs ``x_train`` ... ``y_test``; ``teacher`` the train logits (M, N, C).
    ``rows`` must hold a ``kd`` row before any born-again row.
    """
    refs = ScenarioRefs()
    splits = [data[k] for k in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")]

    def submit(job: RunJob, choice: Any, gen1: Any = None) -> ray.ObjectRef:
        source = None if job.row.born_again else teacher
        return _run_task.remote(job, choice, *splits, source, gen1)  # type: ignore[call-arg]

    for row in rows:
        gen1 = refs.picks.get("kd") if row.born_again else None
        if row.born_again and gen1 is None:
            raise ValueError(f"row {row.name!r} needs a 'kd' row before it in rows")
        trials = [
            submit(_job(sc, row, sc.sweep_seed, sweep=True, params=p), {"params": p}, gen1)
            for p in grid.points(row)
        ]
        refs.sweep[row.name] = trials
        choice: Any = _pick_task.remote(*trials) if trials else {"params": {}}
        if trials:
            refs.picks[row.name] = choice
        refs.finals[row.name] = [
            submit(
                _job(sc, row, seed, sweep=False),
                choice,
                refs.finals["kd"][i] if row.born_again else None,
            )
            for i, seed in enumerate(sc.seeds)
        ]
    return refs


def collect(refs: ScenarioRefs) -> dict[str, Any]:
    """The finished results of a scenario: sweep trials, picked params and finals per row."""
    picks = {name: ray.get(ref) for name, ref in refs.picks.items()}
    return {
        "sweep": {
            name: [_brief(t) for t in ray.get(trials)]
            for name, trials in refs.sweep.items()
            if trials
        },
        "picked": {name: p["params"] for name, p in picks.items()},
        "finals": {name: ray.get(runs) for name, runs in refs.finals.items()},
    }


def _brief(trial: dict[str, Any]) -> dict[str, Any]:
    keep = ("params", "val_accuracy", "test_accuracy", "best_epoch", "seconds", "checkpoint")
    return {k: trial[k] for k in keep}
