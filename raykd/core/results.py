"""The shapes a job leaves behind: ``result.json`` (:class:`JobResult`) and a sweep's
``sweep.json`` (:class:`SweepResult`).

Either file is written once, atomically, at the end of a successful run or sweep, by the
engine; the CLI, the report and the control plane read it through ``load``. A job's status
is never stored: :func:`raykd.core.status.job_status` derives it from the job's events.

Torch-free and Ray-free: importing this module loads pydantic (and the spec) only.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Self

from pydantic import BaseModel, ConfigDict, Field

from raykd.core.jobdir import JobLayout
from raykd.core.spec import JobSpec, MethodSpec, ModelSpec, SweepSpec

# --- result.json ----------------------------------------------------------------------

MacroF1 = Annotated[float | None, Field(
    description="Macro-F1 on the test split (mean over classes of each class's F1), for text "
    "classification.")]
"""A row's ``test_macro_f1`` (teacher, ensemble, generation, student); null unless text data.

An annotated type rather than a base model, so each row keeps its fields' order (and the
result file and OpenAPI document their bytes)."""

SpanScores = Annotated[dict[str, Any] | None, Field(
    description="Span extraction only: SQuAD v2.0 scores in percent: threshold (the no-answer "
    "threshold, max F1 on val), val_f1, val_exact, and test (exact, f1, total, HasAns_*/NoAns_*, "
    "threshold) at that threshold. val_accuracy/test_accuracy are then the share of windows "
    "whose start and end are both right.")]
"""A row's ``span`` scores (see :func:`raykd.data.span_data.span_row`); null unless span data."""



class _Row(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _OpenRow(BaseModel):
    """A row the engine may add diagnostics to (kept as they are)."""

    model_config = ConfigDict(extra="allow")


class DatasetRow(_Row):
    """The data the job ran on, after the split."""

    name: str = Field(description="Dataset name (built-in) or file stem.")
    train: int = Field(ge=0, description="Training examples.")
    val: int = Field(ge=0, description="Validation examples.")
    test: int = Field(ge=0, description="Test examples.")
    num_classes: int = Field(ge=1, description="Number of classes.")
    fingerprints: dict[str, str] = Field(
        default_factory=dict, description="Content fingerprint of each split (train, val, test)."
    )
    class_names: list[str] | None = Field(
        default=None, description="Class i's name at index i; null when the classes are numbers only."
    )
    table: TableRow | None = Field(
        default=None, description="For a .csv/.parquet file: the columns used and dropped, and why."
    )
    spans: dict[str, Any] | None = Field(
        default=None, description="For span data: the tokenizer, window sizes (max_length, "
        "doc_stride, max_query_length) and questions/windows per split; train/val/test above "
        "then count windows.")
    text: dict[str, Any] | None = Field(default=None, description="For text data: its columns, byte "
                                        "width and texts truncated (raykd.data.TextPrep's record).")


class ColumnUsed(_Row):
    """One column of a table the models read."""

    column: str = Field(description="Its name in the file.")
    kind: Literal["numeric", "categorical"] = Field(description="How it is encoded.")
    inputs: list[str] = Field(description="The model inputs it makes (one-hot levels, missing flag).")


class ColumnDropped(_Row):
    """One column of a table the models do not read."""

    column: str = Field(description="Its name in the file.")
    reason: str = Field(description="Why it is not used.")


class TableRow(_Row):
    """The report of a table's columns: what was used, what was dropped and why."""

    label_column: str = Field(description="The label column.")
    used: list[ColumnUsed] = Field(description="Feature columns, in input order.")
    dropped: list[ColumnDropped] = Field(description="Every other column but the label, with its reason.")
    rows: dict[str, int] = Field(description="Rows read, dropped for a missing label, and used.")
    fitted_on: str = Field(description="The rows the preprocessing was fitted on (the training split).")
    preprocessing: str = Field(description="Path of the preprocessing record (preprocessing.json).")


class TeacherRow(_Row):
    """One member of the ensemble."""

    index: int = Field(ge=0, description="Position in the spec's teachers list.")
    model: ModelSpec = Field(description="The teacher's architecture.")
    checkpoint: str | None = Field(description="Where its weights are (.safetensors).")
    trained_by_raykd: bool = Field(
        description="True when this job trained it, in this attempt or an earlier one (a resumed "
        "job that loads its own teacher, its logits cached or not, still says so).")
    train_seconds: float = Field(
        ge=0, description="Wall time of that training, as its checkpoint records it (0 when not "
        "trained by this job).")
    val_accuracy: float | None = Field(description="Accuracy on the validation split.")
    test_accuracy: float | None = Field(description="Accuracy on the test split.")
    test_macro_f1: MacroF1 = None
    span: SpanScores = None


class EnsembleRow(_Row):
    """The teachers' ensemble (mean of their predicted probabilities)."""

    val_accuracy: float | None = Field(description="Ensemble accuracy on the validation split.")
    test_accuracy: float | None = Field(description="Ensemble accuracy on the test split.")
    test_macro_f1: MacroF1 = None
    span: SpanScores = None


class CacheStats(_OpenRow):
    """What one split's teacher logits cost: cache hits versus forward passes."""

    cache_hits: int = Field(ge=0, description="Teachers whose logits came from the cache.")
    teacher_forward_examples: int = Field(ge=0, description="Examples the teachers computed.")
    seconds: float = Field(ge=0, description="Wall time of the split's logits.")
    cache_keys: list[str] = Field(default_factory=list, description="Cache key of each teacher.")
    bytes_per_window_per_teacher: float | None = Field(
        default=None, description="Bytes stored per example (a window, for span data) per "
        "teacher; span entries keep only the valid positions' logits, in float16.")


class EpochRow(_OpenRow):
    """One epoch of one student (rank 0's report); more metrics may follow."""

    epoch: int = Field(ge=1, description="Epoch number, from 1.")
    train_loss: float | None = Field(description="Mean training loss over the epoch's steps.")
    epoch_seconds: float = Field(ge=0, description="Wall time of the epoch's training steps.")
    samples_per_s: float = Field(ge=0, description="Training throughput over all workers.")
    val_accuracy: float | None = Field(default=None, description="Validation accuracy after it.")
    val_f1: float | None = Field(default=None, description="Span data only: SQuAD v2.0 F1 "
                                 "(percent) on val after it (no-answer threshold chosen on val); the best "
                                 "epoch is the one of the highest val_f1.")
    val_exact: float | None = Field(default=None, description="Span data only: SQuAD v2.0 exact "
                                    "match (percent) on val, as val_f1.")


class GenerationRow(_Row):
    """One trained student: a method entry's generation (1 unless born-again)."""

    generation: int = Field(ge=1, description="Born-again generation, from 1.")
    method: str = Field(description="The method this generation learned by (none, kd, ...).")
    seed: int = Field(ge=0, description="Seed of its initialisation and batch order.")
    teacher_weights: list[float] | None = Field(
        default=None, description="Per-teacher weights its loss used (teacher_weights: "
        "val_accuracy: the log-odds weights of the teachers' val accuracies, summing to M); null "
        "for uniform.")
    checkpoint: str = Field(description="Its best-validation weights (.safetensors).")
    val_accuracy: float | None = Field(description="Accuracy on the validation split.")
    test_accuracy: float | None = Field(description="Accuracy on the test split.")
    test_macro_f1: MacroF1 = None
    span: SpanScores = None
    hf_folder: str | None = Field(
        default=None, description="name=hf students: a Hugging Face folder (config, safetensors, "
        "tokenizer) that transformers' Auto classes load without raykd.")
    seconds: float = Field(ge=0, description="Wall time of its fit (start, epochs, state saves).")
    runner: Literal["actor", "train"] | None = Field(
        default=None, description="Where it trained: the job's student actor, or a Ray Train fit.")
    best_epoch: int = Field(default=0, ge=0, description="The epoch whose weights were kept (best on val).")
    history: list[EpochRow] = Field(default_factory=list, description="One row per epoch.")


class StudentRow(_Row):
    """One entry of the spec's methods and the student(s) it trained."""

    label: str = Field(description="Row name: the spec's label, or the method and its settings.")
    method: str = Field(description="none, kd, wkd or annealing.")
    temperature: float = Field(description="Softmax temperature T.")
    alpha: float = Field(description="Weight of the teacher term.")
    incorrect_weight: float = Field(description="WKD's W.")
    teacher_weights: Literal["uniform", "val_accuracy"] = Field(
        default="uniform", description="Per-teacher weights under the ensemble (MethodSpec).")
    generations: list[GenerationRow] = Field(
        min_length=1, description="The born-again generations, in order (one without born-again)."
    )
    val_accuracy: float | None = Field(description="The last generation's validation accuracy.")
    test_accuracy: float | None = Field(description="The last generation's test accuracy.")
    test_macro_f1: MacroF1 = None
    span: SpanScores = None
    ban_test_accuracy: float | None = Field(
        default=None, description="Test accuracy of the generations' ensemble (born-again only)."
    )


class _ResultFile(_OpenRow):
    """What every job's result file holds (its identity, the data, the spec), read and written whole."""

    FILE: ClassVar[str] = JobLayout.RESULT

    job_id: str = Field(description="The job's id (its directory name).")
    spec_hash: str = Field(description="Identity of the spec (see :func:`raykd.core.jobdir.spec_hash`).")
    attempts: int = Field(default=1, ge=1, description="Runs it took (1 + resumes).")
    versions: dict[str, str] = Field(
        default_factory=dict, description="Versions of raykd, python, torch and ray that ran it."
    )
    job: str = Field(description="The spec's name.")
    job_dir: str = Field(description="Absolute path of the job directory.")
    damaged_files: list[str] = Field(
        default_factory=list, description="Damaged cache entries this job found (failed their "
        "checksum or unreadable): never used, computed again (see the job's messages).")
    dataset: DatasetRow = Field(description="The data and its split.")
    spec: JobSpec = Field(description="The spec as run (paths resolved).")
    timings: dict[str, float] = Field(
        default_factory=dict, description="Wall seconds per stage, and the total; the "
        "student_* entries are parts of students (student_actor_start: waiting for the student "
        "actor's process; student_validation and student_state_save: after each epoch; "
        "student_scoring: the best weights on val and test)."
    )

    @classmethod
    def load(cls, path: str | Path) -> Self:
        """Read and validate the file (a job directory is taken to mean its file, ``FILE``).

        Args:
            path: The file, or the job directory holding it.

        Returns:
            The validated result.
        """
        path = Path(path)
        if path.is_dir():
            path = path / cls.FILE
        return cls.model_validate(json.loads(path.read_text(encoding="utf-8")))

    def write(self, path: str | Path) -> Path:
        """Write atomically: a temporary file in the same directory, then ``os.replace``.

        Args:
            path: The file, or the job directory to write ``FILE`` into.

        Returns:
            The path written.
        """
        path = Path(path)
        if path.is_dir():
            path = path / self.FILE
        from raykd.core.jobdir import atomic_path  # light: no torch, no ray

        text = json.dumps(self.model_dump(mode="json"), indent=2)
        # usual permissions (not mkstemp's 0600): the service may run as another user
        with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
            f.write(text + "\n")
            f.flush()
            os.fsync(f.fileno())
        return path


_LOGIT_CACHE = "Cache statistics per logit source (teacher, born-again generation) and split."


class JobResult(_ResultFile):
    """``<job_dir>/result.json``: everything a finished run measured."""

    teachers: list[TeacherRow] = Field(description="The ensemble's members.")
    ensemble: EnsembleRow = Field(description="The ensemble's accuracy.")
    teacher_placement: list[dict[str, Any]] = Field(
        default_factory=list, description="Where each teacher actor ran (diagnostics)."
    )
    logit_cache: dict[str, dict[str, CacheStats]] = Field(
        default_factory=dict, description=_LOGIT_CACHE
    )
    students: list[StudentRow] = Field(description="One row per method entry.")


# --- sweep.json -----------------------------------------------------------------------


class TrialRow(_OpenRow):
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
    epochs: int = Field(ge=0, description="Epochs it ran (ASHA or the time budget may stop it early).")
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


class TrialResources(_Row):
    """What one trial reserves and how many run at once (``raykd.tune.space.TrialPlan``)."""

    trial_cpus: float = Field(ge=0, description="CPUs the trial itself reserves.")
    trial_gpus: float = Field(ge=0, description="GPUs the trial itself reserves.")
    worker_cpus: float = Field(ge=0, description="CPUs its nested Ray Train workers reserve.")
    worker_gpus: float = Field(ge=0, description="GPUs its nested Ray Train workers reserve.")
    concurrency: int = Field(ge=1, description="Trials at once.")
    threads: int = Field(ge=1, description="Torch threads of each student process.")
    nested: bool = Field(description="Whether a trial builds a TorchTrainer (num_workers > 1).")
    cpus_per_trial: float = Field(ge=0, description="trial_cpus + worker_cpus.")


class FinalStudentRow(_OpenRow):
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
    trained_on: dict[str, int] = Field(description="Examples it trained on, per split (train, val).")
    history: list[EpochRow] = Field(
        default_factory=list, description="One row per epoch (val is part of its training data)."
    )
    seconds: float = Field(ge=0, description="Wall time of the retraining.")
    note: str = Field(default="", description="How to read its history.")


class SweepResult(_ResultFile):
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
        default_factory=dict, description=_LOGIT_CACHE
    )
    trials: list[TrialRow] = Field(description="Every trial, ordered by trial id.")
    best: TrialRow = Field(description="The arg-max of the trials' metric.")
    final: FinalStudentRow | None = Field(
        description="The best configuration retrained on train+val (None when not retrained)."
    )
    files: dict[str, str] = Field(
        description="The sweep's other outputs: trials (CSV), heatmap and alpha (PNG plots)."
    )
