"""The student stage's run description: one typed value from every caller to the loop.

:class:`StudentConfig` is what :func:`raykd.train.loop.run_student` trains: the student's
architecture and the data's shape, the method (a :class:`~raykd.spec.MethodSpec`), the
optimisation (a :class:`~raykd.spec.TrainSpec`) and the process settings. A job's
students are built with :meth:`StudentConfig.for_job`; a call site that changes one field
(a sweep trial's method and label, the final retrain's threads) uses
``dataclasses.replace``. It is frozen and picklable: it travels to Ray Train workers,
Tune trials and Ray tasks as it is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from raykd.spec import JobSpec, MethodSpec, TrainSpec

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

    def __post_init__(self) -> None:
        object.__setattr__(self, "input_shape", tuple(int(d) for d in self.input_shape))

    @classmethod
    def for_job(cls, spec: JobSpec, data: Dataset, method: MethodSpec, *, seed: int | None = None,
                label: str | None = None) -> StudentConfig:
        """The student of ``spec`` on ``data`` learning by ``method``.

        ``seed`` replaces ``spec.train.seed`` (a born-again generation's own seed, see
        :func:`raykd.engine.students.generation_seed`); ``label`` defaults to the
        method's display name. Threads: ``scaling.cpus_per_worker`` (at least one).
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
            init_checkpoint=spec.student.checkpoint,
        )

    @property
    def checkpoint_meta(self) -> dict[str, Any]:
        """The architecture keywords of ``save_checkpoint`` / ``load_checkpoint``."""
        return {"config": self.model, "input_shape": self.input_shape,
                "num_classes": self.num_classes}
