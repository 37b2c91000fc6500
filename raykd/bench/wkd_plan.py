"""What ``raykd bench wkd`` trains: the rows (the W curve and the two ``val_accuracy``
settings), the teacher ensembles (``equal`` and ``unequal``) and the plan of each dataset
(the full run's and ``--quick``'s); :mod:`raykd.bench.wkd` runs them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from raykd.bench.quality_runs import Row

W_CURVE: tuple[float, ...] = (1.0, 0.75, 0.5, 0.25, 0.1, 0.05)
"""The W curve; W = 1 is plain KD (every WKD weight is exactly 1)."""

NONE_ROW = Row("none", "none")
WKD_ROWS: tuple[Row, ...] = (
    Row("kd", "kd"),
    *(Row(f"wkd W={w:g}", "wkd", w) for w in W_CURVE[1:]),
    Row("kd (val_accuracy)", "kd", teacher_weights="val_accuracy"),
    Row("wkd W=0.75 (val_accuracy)", "wkd", 0.75, teacher_weights="val_accuracy"),
)
"""Rows trained per ensemble (besides ``none``, trained once per student)."""
CURVE_ROWS: tuple[str, ...] = tuple(r.name for r in WKD_ROWS[: len(W_CURVE)])
"""The W curve's rows, W = 1 (kd) first: "W picked on validation" chooses among them."""


def _mlp(*hidden: int) -> dict[str, Any]:
    return {"name": "mlp", "hidden": list(hidden)}


@dataclass(frozen=True)
class Ensemble:
    """Three teachers: ``(model, seed)`` each."""

    name: str
    teachers: tuple[tuple[dict[str, Any], int], ...]


def ensembles(strong: dict[str, Any], weak: dict[str, Any]) -> tuple[Ensemble, Ensemble]:
    """``equal``: strong x 3 (seeds 1-3); ``unequal``: strong (seed 1), weak, linear."""
    return (
        Ensemble("equal", ((strong, 1), (strong, 2), (strong, 3))),
        Ensemble("unequal", ((strong, 1), (weak, 2), ({"name": "linear"}, 3))),
    )


@dataclass(frozen=True)
class WkdPlan:
    """One dataset of the bench.

    Attributes:
        dataset: A built-in dataset.
        train_limit: ``data.train_limit`` (None: the whole training split).
        ensembles: The teacher ensembles.
        students: ``(name, ModelSpec mapping)`` per student size.
        teacher_train: TrainSpec fields of the teachers (all of them).
        train: TrainSpec fields (no seed) of every student run.
        seeds: Student seeds 0..seeds-1.
        temperature, alpha: The soft term's T and weight, the same in every row.
    """

    dataset: str
    train_limit: int | None
    ensembles: tuple[Ensemble, ...]
    students: tuple[tuple[str, dict[str, Any]], ...]
    teacher_train: dict[str, Any]
    train: dict[str, Any]
    seeds: int
    temperature: float = 4.0
    alpha: float = 0.9
    val_fraction: float = 0.1
    test_fraction: float = 0.2


FULL_PLANS: tuple[WkdPlan, ...] = (
    WkdPlan(
        "diamonds", None, ensembles(_mlp(128, 128), _mlp(4)),
        students=(("same-size", _mlp(128, 128)), ("smaller", _mlp(16))),
        teacher_train={"epochs": 20, "batch_size": 128, "lr": 3e-3, "weight_decay": 0.0},
        train={"epochs": 15, "batch_size": 256, "lr": 3e-3, "weight_decay": 0.0},
        seeds=6,
    ),
    WkdPlan(
        "mnist", 20_000, ensembles(_mlp(128, 128), _mlp(4)),
        students=(("same-size", _mlp(128, 128)), ("smaller", _mlp(16))),
        teacher_train={"epochs": 8, "batch_size": 128, "lr": 3e-3, "weight_decay": 0.0},
        train={"epochs": 5, "batch_size": 128, "lr": 3e-3, "weight_decay": 0.0},
        seeds=6,
    ),
)
"""ggplot2's diamonds (tabular, 5 classes, teachers clearly imperfect) and 20,000 MNIST
training images (10 classes, flattened by the MLPs; the full 10,000-image test set)."""

QUICK_PLANS: tuple[WkdPlan, ...] = (
    WkdPlan(
        "digits", None, ensembles(_mlp(32), _mlp(4)),
        students=(("same-size", _mlp(32)), ("smaller", _mlp(8))),
        teacher_train={"epochs": 8, "batch_size": 64, "lr": 3e-3, "weight_decay": 0.0},
        train={"epochs": 4, "batch_size": 64, "lr": 3e-3, "weight_decay": 0.0},
        seeds=3,
    ),
)
"""``--quick``: scikit-learn's digits (1,797 8x8 images), a smoke check."""
