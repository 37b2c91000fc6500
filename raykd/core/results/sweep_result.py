"""A sweep's ``sweep.json`` (:class:`SweepResult`): every trial, the best, the final student.
Torch-free and Ray-free."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from raykd.core.jobdir import JobLayout
from raykd.core.results.job_result import ResultFile
from raykd.core.results.rows import (
    LOGIT_CACHE,
    CacheStats,
    EnsembleRow,
    EpochRow,
    MacroF1,
    OpenRow,
    Row,
    SpanScores,
    TeacherRow,
)
from raykd.core.spec import MethodSpec, SweepSpec

__all__ = ["FinalStudentRow", "SweepResult", "TrialResources", "TrialRow"]


class TrialRow(OpenRow):
    """One sweep trial: its configuration, its last report and what it cost (``trials.csv``'s row).

    A number the trial never reported (it failed, or never started) is None.
    """

    trial_id: str = Field(description="Tune's id of the trial.")
    method: str | None = Field(description="The method it trained by (none, kd, wkd, annealing).")
    incorrect_weight: float | None = Field(description="WKD's W.")
    temperature: float | None = Field(description="Softmax temperature T.")
    alpha: float | None = Field(description="Weight of the teacher term.")
    val_accuracy: float | None = Field(
        description="Validation accuracy of its last reported epoch: the sweep's metric."
    )
    best_val_accuracy: float | None = Field(description="Its best epoch's validation accuracy.")
    val_f1: float | None = Field(default=None, description="Span data only: SQuAD v2.0 F1 "
                                 "(percent) on val of its last reported epoch: the sweep's metric.")
    val_exact: float | None = Field(default=None, description="Span data only: SQuAD v2.0 "
                                    "exact match (percent) on val of its last reported epoch.")
    best_val_f1: float | None = Field(default=None, description="Span data only: its best "
                                      "epoch's val_f1.")
    epochs: int = Field(
        ge=0, description="Epochs it ran (ASHA or the time budget may stop it early)."
    )
    train_loss: float | None = Field(description="Mean training loss of its last epoch.")
    trial_seconds: float | None = Field(description="Wall time inside the trial, measured there.")
    train_seconds: float | None = Field(
        default=None, description="Its epochs' training steps (the sum of their epoch_seconds).")
    teacher_forward_examples: int = Field(
        ge=0, description="Examples the teachers computed in the trial (0 on shared logits)."
    )
    teacher_seconds: float | None = Field(description="Wall time of those teacher forward passes.")
    status: str = Field(
        description="done, stopped early, not started, unfinished, or 'error: <first line>'."
    )


class TrialResources(Row):
    """What one trial reserves and how many run at once (``raykd.tune.space.TrialPlan``)."""

    trial_cpus: float = Field(ge=0, description="CPUs the trial itself reserves.")
    trial_gpus: float = Field(ge=0, description="GPUs the trial itself reserves.")
    worker_cpus: float = Field(ge=0, description="CPUs its nested Ray Train workers reserve.")
    worker_gpus: float = Field(ge=0, description="GPUs its nested Ray Train workers reserve.")
    concurrency: int = Field(ge=1, description="Trials at once.")
    threads: int = Field(ge=1, description="Torch threads of each student process.")
    nested: bool = Field(description="Whether a trial builds a TorchTrainer (num_workers > 1).")
    cpus_per_trial: float = Field(ge=0, description="trial_cpus + worker_cpus.")


class FinalStudentRow(OpenRow):
    """The best configuration's student, retrained on train+val and tested."""

    checkpoint: str = Field(description="Its weights (best_student.safetensors).")
    test_accuracy: float = Field(ge=0, le=1, description="Accuracy on the test split (span "
                                 "data: the share of windows whose start and end are right).")
    method: MethodSpec = Field(description="The best trial's method and hyperparameters.")
    test_macro_f1: MacroF1 = None
    span: SpanScores = None
    hf_folder: str | None = Field(default=None, description="An hf student: its Hugging Face "
                                  "folder (best_student-hf/; a span student's no-answer threshold "
                                  "in its config.json).")
    trained_on: dict[str, int] = Field(
        description="Examples it trained on, per split (train, val)."
    )
    history: list[EpochRow] = Field(
        default_factory=list, description="One row per epoch (val is part of its training data)."
    )
    seconds: float = Field(ge=0, description="Wall time of the retraining.")
    note: str = Field(default="", description="How to read its history.")


class SweepResult(ResultFile):
    """``<job_dir>/sweep.json``: every trial of a finished sweep, the best, the final student."""

    FILE: ClassVar[str] = JobLayout.SWEEP

    mode: Literal["shared", "naive"] = Field(
        description="shared: trials read the teachers' cached logits; naive: every trial "
        "rebuilds the teachers (the benchmark's baseline)."
    )
    resumed: bool = Field(description="Whether this call restored an interrupted sweep.")
    metric: Literal["val_accuracy", "val_f1"] = Field(
        default="val_accuracy", description="What ranked the trials (maximized, last reported "
        "epoch): val_accuracy, or SQuAD v2.0 val_f1 (percent) for span extraction.")
    sweep: SweepSpec = Field(description="The spec's sweep section.")
    base_method: MethodSpec = Field(description="methods[0], which every trial overrides.")
    resources: TrialResources = Field(description="What each trial reserved.")
    teachers: list[TeacherRow] = Field(
        default_factory=list, description="The ensemble's members (none in naive mode)."
    )
    ensemble: EnsembleRow | None = Field(
        default=None, description="The ensemble's accuracy (None in naive mode)."
    )
    logit_cache: dict[str, dict[str, CacheStats]] = Field(
        default_factory=dict, description=LOGIT_CACHE
    )
    trials: list[TrialRow] = Field(description="Every trial, ordered by trial id.")
    best: TrialRow = Field(description="The arg-max of the trials' metric.")
    final: FinalStudentRow | None = Field(
        description="The best configuration retrained on train+val (None when not retrained)."
    )
    files: dict[str, str] = Field(
        description="The sweep's other outputs: trials (CSV), heatmap and alpha (PNG plots)."
    )
