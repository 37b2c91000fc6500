"""The student stage's run description: one typed value from every caller to the loop.

:class:`StudentConfig` is what :func:`raykd.train.loop.run_student` trains: the student's
architecture and the data's shape, the method (a :class:`~raykd.core.spec.MethodSpec`), the
optimisation (a :class:`~raykd.core.spec.TrainSpec`) and the process settings. A job's
students are built with :meth:`StudentConfig.for_job`; a call site that changes one field
(a sweep trial's method and label, the final retrain's threads) uses
``dataclasses.replace``. It is frozen and picklable: it travels to Ray Train workers,
Tune trials and Ray tasks as it is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from raykd.core.spec import JobSpec, MethodSpec, TrainSpec
from raykd.data.paths import checked_checkpoint
from raykd.losses.topk import dense

if TYPE_CHECKING:
    from raykd.data import Dataset


@dataclass(frozen=True)
class StudentConfig:
    """One student fit: what to build, how it learns, and how its process runs.

    Attributes:
        model: The student's architecture (a ModelSpec dump, or a registry mapping).
        input_shape: Shape of one example.
        num_classes: Classes of the data.
        method: The loss and its hyperparameters (T, alpha, W).
        train: Epochs, batch size, lr, weight decay and the seed of initialisation,
            batch order and augmentation.
        augment: Random shifts and noise on the training images.
        threads: torch intra-op threads of the student process.
        label: The run's name in events and logs.
        init_checkpoint: Warm-start weights (a ``.safetensors`` path); None: fresh.
        teacher_accuracy: Each teacher's validation accuracy (M,), which
            ``method.teacher_weights: val_accuracy`` turns into per-teacher weights; None
            when the caller has none (that setting then fails with a clear error).
        span_val: Span data only: the validation split's questions and windows
            (:class:`raykd.data.span_prep.SpanSplit`). Then the loss masks every softmax with
            the windows' valid row, val_accuracy is the window accuracy (start and end
            right), each epoch also reports SQuAD ``val_f1``/``val_exact`` and the best epoch
            is the one of the highest ``val_f1``.
    """

    model: dict[str, Any]
    input_shape: tuple[int, ...]
    num_classes: int
    method: MethodSpec
    train: TrainSpec
    augment: bool = False
    threads: int = 1
    label: str = "student"
    init_checkpoint: str | None = None
    teacher_accuracy: tuple[float, ...] | None = None
    span_val: Any = None

    @property
    def spans(self) -> bool:
        """Whether the data are span windows (:attr:`span_val` given)."""
        return self.span_val is not None

    def __post_init__(self) -> None:
        object.__setattr__(self, "input_shape", tuple(int(d) for d in self.input_shape))
        if self.teacher_accuracy is not None:
            object.__setattr__(self, "teacher_accuracy",
                               tuple(float(a) for a in self.teacher_accuracy))

    @classmethod
    def for_job(cls, spec: JobSpec, data: Dataset, method: MethodSpec, *, seed: int | None = None,
                label: str | None = None,
                teacher_accuracy: tuple[float, ...] | None = None) -> StudentConfig:
        """The student of ``spec`` on ``data`` learning by ``method``.

        ``seed`` replaces ``spec.train.seed`` (a born-again generation's own seed, see
        :func:`raykd.engine.students.generation_seed`); ``label`` defaults to the
        method's display name; ``teacher_accuracy`` is the validation accuracy of each of
        its teachers (:func:`teacher_accuracy`). Threads: ``scaling.cpus_per_worker`` (at
        least one).
        """
        train = spec.train if seed is None else spec.train.model_copy(update={"seed": seed})
        return cls(
            model=spec.student.model.model_dump(),
            input_shape=tuple(data.input_shape),
            num_classes=data.num_classes,
            method=method,
            train=train,
            augment=spec.data.augment,
            threads=max(1, int(spec.scaling.cpus_per_worker)),
            label=method.display if label is None else label,
            init_checkpoint=checked_checkpoint(spec.student.checkpoint),
            teacher_accuracy=teacher_accuracy,
            span_val=None if data.spans is None else data.spans.parts["val"],
        )

    @property
    def checkpoint_meta(self) -> dict[str, Any]:
        """The architecture keywords of ``save_checkpoint`` / ``load_checkpoint``."""
        return {"config": self.model, "input_shape": self.input_shape,
                "num_classes": self.num_classes}


def teacher_accuracy(val_logits: Any, y_val: Any) -> tuple[float, ...]:
    """Each teacher's accuracy on the validation split, from its (M, N_val, C) logits
    (dense or top-k: :func:`raykd.losses.topk.dense` keeps the arg-max)."""
    top = dense(val_logits).argmax(-1)
    return tuple(float((top[m] == y_val).mean()) for m in range(len(top)))
