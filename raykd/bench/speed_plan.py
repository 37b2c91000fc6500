"""What ``raykd bench speed`` measures: its fixed settings, the steps every row runs, the
rows (a)-(e), the interleaved rounds they run in, the median and spread of a row's rounds,
and the JobSpec of a Ray row (see :mod:`raykd.bench.speed`)."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from raykd.bench import BenchOptionError
from raykd.core.spec import JobSpec

BATCH = 128
QUICK_STEPS = 100
ROUNDS, QUICK_ROUNDS = 3, 2
"""Rounds per row: every row is measured this many times, rows interleaved."""
WARMUP_STEPS, QUICK_WARMUP_STEPS = 50, 10
"""Untimed steps a plain row runs before its clock starts (a Ray row: one untimed epoch)."""
TEACHER_SEEDS = (1, 2, 3)
MODEL = {"name": "cnn", "width": 8}
LR = 3e-3
TEMPERATURE, ALPHA = 4.0, 0.9
THREAD_ENV = ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "GOMP_SPINCOUNT")
"""Environment that changes how torch's CPU threads behave; recorded with the results."""


@dataclass(frozen=True)
class Plan:
    """How many steps each row runs and the data/teacher settings that give them.

    ``steps`` are timed; before them a plain row runs ``warmup_steps`` untimed steps and a
    Ray row one untimed epoch (its first epoch: worker start, first allocations, caches).
    Every row is measured in ``rounds`` interleaved rounds (:func:`round_schedule`).
    """

    steps: int
    epochs: int
    train_limit: int | None
    teacher_epochs: int
    rounds: int = ROUNDS
    warmup_steps: int = WARMUP_STEPS


def plan_steps(*, quick: bool, steps: int | None, n_train: int = 54_000,
               rounds: int | None = None) -> Plan:
    """Steps per row: one epoch of the training split, ~100 with ``quick``, or ``steps``.

    Fewer steps than one epoch use ``data.train_limit = steps * batch``; more use as many
    whole epochs as needed over a limited split so every row runs exactly the same steps.
    ``rounds`` defaults to 3 (2 with ``quick``).
    """
    rounds = rounds if rounds is not None else (QUICK_ROUNDS if quick else ROUNDS)
    if rounds < 1:
        raise BenchOptionError(f"--rounds={rounds} is invalid; expected an integer >= 1")
    per_epoch = n_train // BATCH
    wanted = steps if steps is not None else (QUICK_STEPS if quick else per_epoch)
    if wanted < 1:
        raise BenchOptionError(f"--steps={wanted} is invalid; expected an integer >= 1")
    epochs = -(-wanted // per_epoch)
    per = -(-wanted // epochs)
    limit = None if per == per_epoch else per * BATCH
    return Plan(steps=epochs * per, epochs=epochs, train_limit=limit,
                teacher_epochs=1 if quick else 3, rounds=rounds,
                warmup_steps=QUICK_WARMUP_STEPS if quick else WARMUP_STEPS)


def round_schedule(ray_keys: tuple[str, ...], plain_keys: tuple[str, ...],
                   rounds: int) -> list[list[str]]:
    """The order rows run in, round by round: every row once per round, rotated each round.

    A Ray row needs a running Ray and a plain row a machine without it, so each round runs
    its rows in two contiguous groups; the groups swap places every round (Ray rows first
    in even rounds), and within a group round ``r`` starts at the ``r``-th row. So no row
    always runs first, last, or right after the same neighbour.
    """
    def rotated(keys: tuple[str, ...], r: int) -> list[str]:
        return [*keys[r % len(keys):], *keys[: r % len(keys)]] if keys else []

    out = []
    for r in range(rounds):
        groups = (rotated(ray_keys, r), rotated(plain_keys, r))
        out.append([*groups[0], *groups[1]] if r % 2 == 0 else [*groups[1], *groups[0]])
    return out


def spread(values: list[float]) -> dict[str, float]:
    """Median, min, max and the quartiles (``statistics.quantiles``, inclusive) of ``values``."""
    if not values:
        raise ValueError("spread of no values")
    q1, _, q3 = (statistics.quantiles(values, n=4, method="inclusive") if len(values) > 1
                 else (values[0],) * 3)
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "q1": q1, "q3": q3, "n": len(values)}


def merge_rounds(results: list[dict[str, Any]]) -> dict[str, Any]:
    """One row from its rounds: samples/s is the median round's, with the spread of all rounds.

    The other fields (times, memory, accuracy, phases) are those of the round whose
    samples/s is the median (the lower median for an even count). Failed rounds (an
    ``error`` entry) are counted and left out; if every round failed, the first error stands.
    """
    ok = [r for r in results if "error" not in r]
    if not ok:
        return {**results[0], "failed_rounds": len(results)}
    rates = [r["samples_per_s"] for r in ok]
    middle = sorted(range(len(ok)), key=lambda i: rates[i])[(len(ok) - 1) // 2]
    stats = spread(rates)
    return {**ok[middle], "samples_per_s": stats["median"], "spread": stats,
            "round_samples_per_s": rates, "failed_rounds": len(results) - len(ok)}


@dataclass(frozen=True)
class RayRow:
    """One raykd row: how the student is scaled and whether it is online."""

    key: str
    label: str
    num_workers: int
    cpus_per_worker: float
    augment: bool = False
    runner: str = "auto"  # scaling.student_runner (auto: the driver on a local Ray, 1 worker)
    replicas: int = 1  # scaling.teacher_replicas (online rows)
    online: str = "auto"  # scaling.online_teachers (online rows)


RAY_ROWS = (
    RayRow("c", "raykd, cached logits, student actor x 2 CPU", 1, 2.0, runner="actor"),
    RayRow("ct", "raykd, cached logits, Ray Train 1 worker x 2 CPU", 1, 2.0, runner="train"),
    RayRow("d", "raykd online (augment), teachers in the student actor's process x 2 CPU", 1, 2.0,
           augment=True),
    RayRow("da", "raykd online (augment), one ensemble actor, student actor x 2 CPU", 1, 2.0,
           augment=True, online="actors"),
    RayRow("d2", "raykd online (augment), 2 ensemble copies, Ray Train 2 workers x 1 CPU", 2, 1.0,
           augment=True, replicas=2),
    RayRow("e1", "raykd, cached, student actor x 1 CPU", 1, 1.0, runner="actor"),
    RayRow("e2", "raykd, cached, Ray Train 2 workers x 1 CPU (DDP gloo)", 2, 1.0),
)
PLAIN_LABELS = {"a": "plain PyTorch, student alone (no teachers)",
                "p": "plain PyTorch KD on cached logits gathered by index",
                "b": "plain PyTorch KD, 3 teachers forward every batch",
                "c0": "diagnostic: raykd loop (run_student), cached, no Ray"}
PLAIN_ROWS = ("a", "p", "b", "c0")
ROW_ORDER = ("a", "p", "b", "c", "ct", "d", "da", "d2", "e1", "e2", "c0")


def bench_spec(plan: Plan, out: Path, *, checkpoints: list[str] | None,
               row: RayRow | None = None) -> Any:
    """The JobSpec of a Ray row (or of the setup, without a row): demo models, method kd."""
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
        # the first epoch is the row's untimed warm-up (see run_ray_row)
        "train": {"epochs": plan.epochs + 1, "batch_size": BATCH, "lr": LR, "seed": 0},
        "methods": [{"method": "kd", "temperature": TEMPERATURE, "alpha": ALPHA}],
        "scaling": {"num_workers": row.num_workers, "cpus_per_worker": row.cpus_per_worker,
                    "use_gpu": False, "student_runner": row.runner,
                    "teacher_replicas": row.replicas, "online_teachers": row.online},
        "storage": str(out),
    })
