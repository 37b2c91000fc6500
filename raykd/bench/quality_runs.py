"""The student runs of ``raykd bench quality``: what one run is given, and how it trains.

A run trains one student with :func:`raykd.train.loop.run_student` (no Ray Train: a
``TorchTrainer`` costs ~15-18 s of start-up per fit, RAY-NOTES), keeps the state of its
best validation epoch, saves it with :func:`raykd.models.save_checkpoint` and evaluates
it on test. :func:`train_run` is Ray-free; :func:`raykd.bench.quality_tasks.submit_scenario`
runs it as ``num_cpus=1`` tasks (one torch thread each), reading the data splits and the
teachers' frozen (M, N, C) train logits zero-copy from the object store (put there once).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from raykd.core.spec import MethodSpec, TrainSpec
from raykd.models import load_checkpoint, save_checkpoint, weights_hash
from raykd.train.config import StudentConfig
from raykd.train.loop import LoopData, run_student
from raykd.train.steps import accuracy, predict_logits


@dataclass(frozen=True)
class Row:
    """One row of the quality table: a way to train the student.

    Attributes:
        name: The row's name in tables and plots.
        method: The loss (``raykd.losses.METHODS``); born-again generation 2 uses ``kd``.
        incorrect_weight: WKD's W (1.0 for the other methods, where it is unused).
        born_again: Generation 2, taught by the ``kd`` row's student instead of the teachers.
        teacher_weights: ``MethodSpec.teacher_weights`` (``uniform`` or ``val_accuracy``).
    """

    name: str
    method: str
    incorrect_weight: float = 1.0
    born_again: bool = False
    teacher_weights: str = "uniform"

    @property
    def slug(self) -> str:
        """A file-system name: ``wkd-W0.75``, ``kd-val_accuracy``."""
        return self.name.replace(" W=", "-W").replace(" (", "-").replace(")", "").replace(" ", "-")

    @property
    def tuned(self) -> bool:
        """Whether the row has hyperparameters to sweep (``none`` has none)."""
        return self.method != "none"


ROWS: tuple[Row, ...] = (
    Row("none", "none"),
    Row("kd", "kd"),
    Row("annealing", "annealing"),
    Row("born-again", "kd", born_again=True),
    Row("wkd W=0.5", "wkd", 0.5),
    Row("wkd W=0.75", "wkd", 0.75),
    Row("wkd W=0.9", "wkd", 0.9),
)
"""The table's rows, in order; every one is trained separately per seed."""


@dataclass(frozen=True)
class Grid:
    """The validation sweep: the same number of trials for every tuned row.

    ``kd``, ``wkd`` and born-again search ``temperatures x alphas``; annealing has no
    alpha (its target moves from the teachers to the labels), so it spends the same
    budget on ``annealing_temperatures``.
    """

    temperatures: tuple[float, ...] = (2.0, 4.0)
    alphas: tuple[float, ...] = (0.5, 0.9)
    annealing_temperatures: tuple[float, ...] = (1.0, 2.0, 4.0, 8.0)

    def points(self, row: Row) -> list[dict[str, float]]:
        """The grid points of ``row`` (empty for ``none``)."""
        if not row.tuned:
            return []
        if row.method == "annealing":
            return [{"temperature": t} for t in self.annealing_temperatures]
        return [{"temperature": t, "alpha": a} for t in self.temperatures for a in self.alphas]


@dataclass(frozen=True)
class RunJob:
    """Everything one run needs besides its hyperparameters, data and teachers."""

    dataset: str
    scenario: str
    row: Row
    seed: int
    student: Mapping[str, Any]
    input_shape: tuple[int, ...]
    num_classes: int
    train: Mapping[str, Any]  # TrainSpec fields except seed
    checkpoint: str
    sweep: bool = False
    teacher_accuracy: tuple[float, ...] | None = None  # for teacher_weights: val_accuracy

    @property
    def label(self) -> str:
        kind = "sweep " if self.sweep else ""
        return f"{self.dataset}/{self.scenario}/{kind}{self.row.name}/seed{self.seed}"


class RunData(NamedTuple):
    """The split arrays one run reads (zero-copy views under Ray)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


@dataclass
class BestEpoch:
    """A ``run_student`` reporter that keeps the state of the best-validation epoch."""

    model: Any = None
    state: dict[str, Any] = field(default_factory=dict)
    val_accuracy: float = -1.0
    epoch: int = 0

    def __call__(self, metrics: dict[str, Any], state: Any) -> None:
        if state is None or metrics.get("val_accuracy", -1.0) <= self.val_accuracy:
            return
        model = state.model
        self.model, self.val_accuracy, self.epoch = (
            model,
            float(metrics["val_accuracy"]),
            metrics["epoch"],
        )
        self.state = {k: v.detach().clone() for k, v in model.state_dict().items()}


def row_method(row: Row, params: Mapping[str, float], label: str) -> MethodSpec:
    """The row's method at the grid point ``params`` (T, alpha)."""
    fields = {"method": row.method, "incorrect_weight": row.incorrect_weight, "label": label[-64:],
              "teacher_weights": row.teacher_weights}
    return MethodSpec.model_validate({**fields, **params})


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def loop_config(job: RunJob, params: Mapping[str, float]) -> StudentConfig:
    """What :func:`raykd.train.loop.run_student` trains for one run (one thread)."""
    return StudentConfig(
        model=dict(job.student), input_shape=job.input_shape, num_classes=job.num_classes,
        method=row_method(job.row, params, job.label),
        train=TrainSpec.model_validate({**job.train, "seed": job.seed}),
        augment=False, threads=1, label=job.label, init_checkpoint=None,
        teacher_accuracy=job.teacher_accuracy,
    )


def fit_best(job: RunJob, params: Mapping[str, float], data: RunData,
             teacher: np.ndarray | None) -> tuple[BestEpoch, list[dict[str, Any]]]:
    """Train; the returned model holds the best-validation epoch's weights, saved to disk."""
    best = BestEpoch()
    teacher = None if job.row.method == "none" else teacher
    loop_data = LoopData(x_train=data.x_train, y_train=data.y_train, x_val=data.x_val,
                         y_val=data.y_val, teacher_train=teacher)
    history = run_student(loop_config(job, params), loop_data, report=best)
    best.model.load_state_dict(best.state)
    extra = {"row": job.row.name, "seed": job.seed, "params": dict(params), "epoch": best.epoch}
    save_checkpoint(best.model, job.checkpoint, config=dict(job.student),
                    input_shape=job.input_shape, num_classes=job.num_classes, extra=extra)
    return best, history


def train_run(job: RunJob, params: Mapping[str, float], data: RunData, teacher: np.ndarray | None,
              gen1: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Train one student, save its best-validation state, evaluate it on test.

    Args:
        job: What to train and where to save it.
        params: ``temperature`` / ``alpha`` of the row (empty for ``none``).
        data: The splits.
        teacher: The ensemble's train logits (M, N, C); None for ``none`` and born-again.
        gen1: Born-again only: the result of generation 1 (its ``checkpoint`` teaches).

    Returns:
        The run's identity, hyperparameters, best epoch, val/test accuracy, checkpoint
        path and weights hash, seconds, per-epoch history (and ``ban_test_accuracy``,
        the two generations' averaged probabilities, for born-again).
    """
    start = time.perf_counter()
    if job.row.born_again:
        if gen1 is None:
            raise ValueError(f"{job.label}: born-again needs generation 1's result")
        first = load_checkpoint(gen1["checkpoint"])
        teacher = predict_logits(first, data.x_train)[None]
    best, history = fit_best(job, params, data, teacher)
    test_logits = predict_logits(best.model, data.x_test)
    out = {
        "dataset": job.dataset, "scenario": job.scenario, "row": job.row.name, "seed": job.seed,
        "sweep": job.sweep, "params": dict(params), "best_epoch": best.epoch,
        "val_accuracy": best.val_accuracy, "test_accuracy": accuracy(test_logits, data.y_test),
        "checkpoint": job.checkpoint, "weights_hash": weights_hash(best.model),
        "seconds": time.perf_counter() - start, "history": history,
    }
    if job.row.born_again:
        probs = _softmax(predict_logits(first, data.x_test)) + _softmax(test_logits)
        out["ban_test_accuracy"] = accuracy(probs, data.y_test)
        out["gen1_checkpoint"] = gen1["checkpoint"]  # type: ignore[index]
    return out
