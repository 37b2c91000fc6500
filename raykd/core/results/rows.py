"""The rows of a job's result files: its data, teachers, ensemble, students (with their
generations and epochs) and logit-cache statistics. Torch-free and Ray-free."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from raykd.core.spec import ModelSpec

__all__ = [
    "LOGIT_CACHE", "CacheStats", "ColumnDropped", "ColumnUsed", "DatasetRow", "EnsembleRow",
    "EpochRow", "GenerationRow", "MacroF1", "OpenRow", "Row", "SpanScores", "StudentRow",
    "TableRow", "TeacherRow",
]

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
"""A row's ``span`` scores (see :func:`raykd.metrics.squad.span_row`); null unless span data."""


class Row(BaseModel):
    """A row of fixed fields: an unknown key is an error."""

    model_config = ConfigDict(extra="forbid")



class OpenRow(BaseModel):
    """A row the engine may add diagnostics to (kept as they are)."""

    model_config = ConfigDict(extra="allow")


class DatasetRow(Row):
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
        default=None,
        description="Class i's name at index i; null when the classes are numbers only."
    )
    table: TableRow | None = Field(
        default=None, description="For a .csv/.parquet file: the columns used and dropped, and why."
    )
    spans: dict[str, Any] | None = Field(
        default=None, description="For span data: the tokenizer, window sizes (max_length, "
        "doc_stride, max_query_length) and questions/windows per split; train/val/test above "
        "then count windows.")
    text: dict[str, Any] | None = Field(default=None,
    description="For text data: its columns, byte "
                                        "width and texts truncated (raykd.data.TextPrep's record).")


class ColumnUsed(Row):
    """One column of a table the models read."""

    column: str = Field(description="Its name in the file.")
    kind: Literal["numeric", "categorical"] = Field(description="How it is encoded.")
    inputs: list[str] = Field(
        description="The model inputs it makes (one-hot levels, missing flag)."
    )


class ColumnDropped(Row):
    """One column of a table the models do not read."""

    column: str = Field(description="Its name in the file.")
    reason: str = Field(description="Why it is not used.")


class TableRow(Row):
    """The report of a table's columns: what was used, what was dropped and why."""

    label_column: str = Field(description="The label column.")
    used: list[ColumnUsed] = Field(description="Feature columns, in input order.")
    dropped: list[ColumnDropped] = Field(
        description="Every other column but the label, with its reason."
    )
    rows: dict[str, int] = Field(description="Rows read, dropped for a missing label, and used.")
    fitted_on: str = Field(
        description="The rows the preprocessing was fitted on (the training split)."
    )
    preprocessing: str = Field(description="Path of the preprocessing record (preprocessing.json).")


class TeacherRow(Row):
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


class EnsembleRow(Row):
    """The teachers' ensemble (mean of their predicted probabilities)."""

    val_accuracy: float | None = Field(description="Ensemble accuracy on the validation split.")
    test_accuracy: float | None = Field(description="Ensemble accuracy on the test split.")
    test_macro_f1: MacroF1 = None
    span: SpanScores = None


class CacheStats(OpenRow):
    """What one split's teacher logits cost: cache hits versus forward passes."""

    cache_hits: int = Field(ge=0, description="Teachers whose logits came from the cache.")
    teacher_forward_examples: int = Field(ge=0, description="Examples the teachers computed.")
    seconds: float = Field(ge=0, description="Wall time of the split's logits.")
    cache_keys: list[str] = Field(default_factory=list, description="Cache key of each teacher.")
    bytes_per_window_per_teacher: float | None = Field(
        default=None, description="Bytes stored per example (a window, for span data) per "
        "teacher; span entries keep only the valid positions' logits, in float16.")


class EpochRow(OpenRow):
    """One epoch of one student (rank 0's report); more metrics may follow."""

    epoch: int = Field(ge=1, description="Epoch number, from 1.")
    train_loss: float | None = Field(description="Mean training loss over the epoch's steps.")
    epoch_seconds: float = Field(ge=0, description="Wall time of the epoch's training steps.")
    samples_per_s: float = Field(ge=0, description="Training throughput over all workers.")
    val_accuracy: float | None = Field(default=None, description="Validation accuracy after it.")
    val_f1: float | None = Field(default=None, description="Span data only: SQuAD v2.0 F1 "
                                 "(percent) on val after it (no-answer threshold chosen on val); "
                                 "the best "
                                 "epoch is the one of the highest val_f1.")
    val_exact: float | None = Field(default=None, description="Span data only: SQuAD v2.0 exact "
                                    "match (percent) on val, as val_f1.")


class GenerationRow(Row):
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
    runner: Literal["driver", "actor", "train"] | None = Field(
        default=None, description="Where it trained: the job's driver process, the job's "
        "student actor, or a Ray Train fit.")
    best_epoch: int = Field(
        default=0, ge=0, description="The epoch whose weights were kept (best on val)."
    )
    history: list[EpochRow] = Field(default_factory=list, description="One row per epoch.")


class StudentRow(Row):
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


LOGIT_CACHE = "Cache statistics per logit source (teacher, born-again generation) and split."
