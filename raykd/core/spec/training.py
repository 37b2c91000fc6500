"""The spec's training sections: how students and teachers are optimised, the distillation
methods, the workers and devices, and the teacher-logit cache."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from raykd.core.spec.section import MAX_SEED, Section

__all__ = [
    "DEFAULT_TEMPERATURE", "CacheSpec", "MethodName", "MethodSpec", "ScalingSpec",
    "TeacherTrainSpec", "TrainSpec",
]

MethodName = Literal["none", "kd", "wkd", "annealing"]
DEFAULT_TEMPERATURE: dict[str, float] = {"none": 4.0, "kd": 4.0, "wkd": 4.0, "annealing": 1.0}
"""T when the spec gives none: 4 for KD/WKD (Hinton et al.), 1 for annealing (Clark et al.)."""



class TrainSpec(Section):
    """Optimisation settings for one model (a teacher trained by raykd, or a student)."""

    epochs: int = Field(default=3, ge=1, le=1000, description="Passes over the training split.")
    batch_size: int = Field(default=128, ge=1, le=65536, description="Global batch size.")
    lr: float = Field(default=1e-3, gt=0.0, le=10.0, description="Adam learning rate.")
    weight_decay: float = Field(default=0.0, ge=0.0, le=1.0, description="AdamW weight decay.")
    seed: int = Field(
        default=0, ge=0, le=MAX_SEED, description="Seed of initialisation and shuffling."
    )
    schedule: Literal["constant", "linear"] = Field(
        default="constant",
        description="Learning rate over the run: constant, or linear (warm-up from 0 over "
        "warmup_fraction of the optimizer steps, then linear decay to 0, as for transformers).",
    )
    warmup_fraction: float = Field(
        default=0.0, ge=0.0, le=0.5, description="Share of the optimizer steps spent warming up."
    )
    grad_accum_steps: int = Field(
        default=1, ge=1, le=1024,
        description="Micro-batches of batch_size per optimizer step (the effective batch is "
        "batch_size x grad_accum_steps); an epoch's last group may be shorter.",
    )


class TeacherTrainSpec(Section):
    """How raykd trains the teachers that come without a checkpoint.

    There is no seed here: each teacher is initialised and shuffled by its own
    ``teachers[i].seed``, so that the ensemble's members differ.
    """

    epochs: int = Field(default=3, ge=1, le=1000, description="Passes over the training split.")
    batch_size: int = Field(default=128, ge=1, le=65536, description="Batch size.")
    lr: float = Field(default=1e-3, gt=0.0, le=10.0, description="Adam learning rate.")
    weight_decay: float = Field(default=0.0, ge=0.0, le=1.0, description="AdamW weight decay.")
    schedule: Literal["constant", "linear"] = Field(
        default="constant", description="Learning rate over the fit: constant, or linear "
        "warm-up then linear decay to 0 (fine-tuning a pretrained transformer).",
    )
    warmup_fraction: float = Field(
        default=0.0, ge=0.0, le=0.5, description="Share of the optimizer steps spent warming up."
    )


class MethodSpec(Section):
    """How one student learns: the method and its hyperparameters (T, alpha, W)."""

    method: MethodName = Field(description="none (labels only), kd, wkd or annealing.")
    temperature: float = Field(
        default=4.0, gt=0.0, le=100.0,
        description="Softmax temperature T; default 4 for kd/wkd and 1 for annealing (whose target "
        "is then the teachers' plain softmax, as in Clark et al. 2019).",
    )
    alpha: float = Field(
        default=0.9, ge=0.0, le=1.0,
        description="Weight of the teacher term; 1 - alpha on the labels."
    )
    incorrect_weight: float = Field(
        default=0.75, gt=0.0, le=1.0, description="WKD's W: scale of a wrong teacher's logits."
    )
    teacher_weights: Literal["uniform", "val_accuracy"] = Field(
        default="uniform",
        description="Weight of each teacher in the ensemble (kd, wkd, annealing): uniform (every "
        "teacher 1, as in the paper) or val_accuracy: M r_m / sum_k r_k with r_m = max(0, "
        "log((C-1) a_m / (1 - a_m))) from teacher m's validation accuracy a_m (log-odds, "
        "raykd.losses.accuracy_weights); WKD's per-example rule then runs on these weights.",
    )
    generations: int = Field(
        default=1, ge=1, le=10,
        description="Born-again generations: generation k is taught by generation k-1.",
    )
    label: str | None = Field(default=None, max_length=64, description="Row name in the results.")

    @model_validator(mode="before")
    @classmethod
    def _method_default_temperature(cls, data: Any) -> Any:
        """Fill T with the method's default when the spec does not set it."""
        if isinstance(data, dict) and data.get("temperature") is None:
            method = data.get("method")
            if isinstance(method, str) and method in DEFAULT_TEMPERATURE:
                return {**data, "temperature": DEFAULT_TEMPERATURE[method]}
        return data

    @model_validator(mode="after")
    def _weights_need_teachers(self) -> MethodSpec:
        if self.method == "none" and self.teacher_weights != "uniform":
            raise ValueError(f"teacher_weights: {self.teacher_weights} weights the teachers, which "
                             "method none does not use; use kd, wkd or annealing, or drop it")
        return self

    @property
    def display(self) -> str:
        """The row name: the label, or the method with its W, teacher weights and generations."""
        if self.label:
            return self.label
        name: str = self.method
        if self.method == "wkd":
            name += f" W={self.incorrect_weight:g}"
        if self.teacher_weights != "uniform":
            name += f" ({self.teacher_weights})"
        if self.generations > 1:
            name += f" x{self.generations} gen"
        return name


class ScalingSpec(Section):
    """How many student workers and which devices."""

    num_workers: int = Field(
        default=1, ge=1, le=1024, description="Student workers (Ray Train DDP when more than 1)."
    )
    use_gpu: bool | Literal["auto"] = Field(
        default="auto",
        description="Students and teachers on GPUs; auto = when the cluster has any."
    )
    teacher_gpu_fraction: float = Field(
        default=1.0, gt=0.0, le=1.0,
        description="GPU share per teacher actor; 1 pins each teacher to its own GPU.",
    )
    cpus_per_worker: float = Field(
        default=1.0, gt=0.0, le=256.0, description="CPUs per student worker."
    )
    max_failures: int = Field(
        default=2, ge=0, le=100,
        description="Failure budget of each student: how many times its workers are restarted "
        "(from the last epoch's checkpoint) before the job fails. Student runners actor and "
        "train only: with the driver runner a crash of the student is the driver's, which ends "
        "the job; running the same job id again resumes it from its last epoch.",
    )
    teacher_replicas: int = Field(
        default=1, ge=1, le=64,
        description="Online serving on CPUs by actors (augmentation, online_teachers 'actors'): "
        "copies of the one-actor ensemble; student worker r asks copy r mod n (more copies "
        "serve more DDP workers at once).",
    )
    online_teachers: Literal["auto", "in_process", "actors"] = Field(
        default="auto",
        description="Online serving (augmentation): where the teachers compute each step's "
        "logits. in_process: in each student worker's own process, in a thread beside the "
        "student's step, on the CPUs an ensemble actor would take (half the worker's on a full "
        "node; CPUs only: no batch or logit crosses processes); actors: teacher actors (on "
        "CPUs teacher_replicas ensemble actors, on GPUs one actor per teacher, each on its own "
        "device); auto: in_process on CPUs with one student worker, else actors.",
    )
    student_runner: Literal["auto", "driver", "actor", "train"] = Field(
        default="auto",
        description="Where students train. train: a Ray Train TorchTrainer per student "
        "(num_workers DDP workers); actor: one student actor per job, started once and reused "
        "by every student (num_workers 1; saves Ray Train's start-up, ~15 s per student on a "
        "small machine); driver: in the job's driver process itself, on the cpus_per_worker "
        "torch threads the actor would have (num_workers 1, CPUs only; no process to start: "
        "saves the actor's ~5 s start, a fresh Python importing torch; the driver's death is "
        "the job's, which resumes from the last saved epoch when run again); auto: driver on a "
        "local Ray this driver started (one node, no GPU, no augmentation, no fault that kills "
        "the student), else actor for one worker, train for more.",
    )

    @model_validator(mode="after")
    def _runner_fits_workers(self) -> ScalingSpec:
        runner = self.student_runner
        if runner in ("actor", "driver") and self.num_workers != 1:
            raise ValueError(
                f"scaling.student_runner='{runner}' trains each student in one process, but "
                f"scaling.num_workers={self.num_workers}; use student_runner 'train' (Ray Train "
                f"DDP) or 'auto', or num_workers: 1")
        if runner == "driver" and self.use_gpu is True:
            raise ValueError(
                "scaling.student_runner='driver' trains on the driver's CPU threads, but "
                "scaling.use_gpu is true; use student_runner 'actor' or 'auto' (a student actor "
                "on a GPU), or use_gpu false")
        return self

    @model_validator(mode="after")
    def _in_process_needs_cpus(self) -> ScalingSpec:
        if self.online_teachers == "in_process" and self.use_gpu is True:
            raise ValueError(
                "scaling.online_teachers='in_process' runs the teachers on the student workers' "
                "CPU threads, but scaling.use_gpu is true; use online_teachers 'actors' or "
                "'auto' (teachers on their own GPUs), or use_gpu false")
        if self.online_teachers == "in_process" and self.teacher_replicas > 1:
            raise ValueError(
                f"scaling.teacher_replicas={self.teacher_replicas} copies the teachers' ensemble "
                "actor, but online_teachers 'in_process' runs no teacher actor; use "
                "online_teachers 'actors' (or 'auto' with several workers), or teacher_replicas 1")
        return self


class CacheSpec(Section):
    """The per-teacher logit cache."""

    enabled: bool = Field(
        default=True, description="Reuse teacher logits across epochs, runs and jobs."
    )
    dir: str | None = Field(
        default=None, description="Cache directory; default <storage>/cache (shared by all jobs)."
    )
    dtype: Literal["float32", "float16"] = Field(default="float32", description="Storage dtype.")
    topk: int | None = Field(
        default=None, ge=1,
        description="Hand students only the top-k logits per example plus the tail's logsumexp "
        "(for large class counts; total-variation error <= the tail's probability mass).",
    )
