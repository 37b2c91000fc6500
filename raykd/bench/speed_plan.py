"""What ``raykd bench speed`` measures: its fixed settings, the steps every row runs, the
rows (a)-(e) and the JobSpec of a Ray row (see :mod:`raykd.bench.speed`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from raykd.bench import BenchOptionError

BATCH = 128
QUICK_STEPS = 100
TEACHER_SEEDS = (1, 2, 3)
MODEL = {"name": "cnn", "width": 8}
LR = 3e-3
TEMPERATURE, ALPHA = 4.0, 0.9
THREAD_ENV = ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "GOMP_SPINCOUNT")
"""Environment that changes how torch's CPU threads behave; recorded with the results."""


@dataclass(frozen=True)
class Plan:
    """How many steps each row runs and the data/teacher settings that give them."""

    steps: int
    epochs: int
    train_limit: int | None
    teacher_epochs: int


def plan_steps(*, quick: bool, steps: int | None, n_train: int = 54_000) -> Plan:
    """Steps per row: one epoch of the training split, ~100 with ``quick``, or ``steps``.

    Fewer steps than one epoch use ``data.train_limit = steps * batch``; more use as many
    whole epochs as needed over a limited split so every row runs exactly the same steps.
    """
    per_epoch = n_train // BATCH
    wanted = steps if steps is not None else (QUICK_STEPS if quick else per_epoch)
    if wanted < 1:
        raise BenchOptionError(f"--steps={wanted} is invalid; expected an integer >= 1")
    epochs = -(-wanted // per_epoch)
    per = -(-wanted // epochs)
    limit = None if per == per_epoch else per * BATCH
    return Plan(steps=epochs * per, epochs=epochs, train_limit=limit,
                teacher_epochs=1 if quick else 3)


@dataclass(frozen=True)
class RayRow:
    """One raykd row: how the student is scaled and whether it is online."""

    key: str
    label: str
    num_workers: int
    cpus_per_worker: float
    augment: bool = False


RAY_ROWS = (
    RayRow("c", "raykd, cached logits, 1 worker x 2 CPU", 1, 2.0),
    RayRow("d", "raykd online (augment), teacher actors, 1 worker x 2 CPU", 1, 2.0, augment=True),
    RayRow("e1", "raykd, cached, 1 worker x 1 CPU", 1, 1.0),
    RayRow("e2", "raykd, cached, 2 workers x 1 CPU (DDP gloo)", 2, 1.0),
)
PLAIN_LABELS = {"a": "plain PyTorch, student alone (no teachers)",
                "b": "plain PyTorch KD, 3 teachers forward every batch",
                "c0": "diagnostic: raykd loop (run_student), cached, no Ray"}
ROW_ORDER = ("a", "b", "c", "d", "e1", "e2", "c0")


def bench_spec(plan: Plan, out: Path, *, checkpoints: list[str] | None,
               row: RayRow | None = None) -> Any:
    """The JobSpec of a Ray row (or of the setup, without a row): demo models, method kd."""
    from raykd.spec import JobSpec

    row = row or RAY_ROWS[0]
    teachers = [{"model": MODEL, "seed": s, "checkpoint": checkpoints[i] if checkpoints else None}
                for i, s in enumerate(TEACHER_SEEDS)]
    return JobSpec.model_validate({
        "name": f"bench-speed-{row.key}",
        "data": {"dataset": "mnist", "val_fraction": 0.1, "seed": 0,
                 "train_limit": plan.train_limit, "augment": row.augment},
        "teachers": teachers,
        "teacher_train": {"epochs": plan.teacher_epochs, "batch_size": BATCH, "lr": LR},
        "student": {"model": MODEL},
        "train": {"epochs": plan.epochs, "batch_size": BATCH, "lr": LR, "seed": 0},
        "methods": [{"method": "kd", "temperature": TEMPERATURE, "alpha": ALPHA}],
        "scaling": {"num_workers": row.num_workers, "cpus_per_worker": row.cpus_per_worker,
                    "use_gpu": False},
        "storage": str(out),
    })
