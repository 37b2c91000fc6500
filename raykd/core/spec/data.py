"""The spec's data section: the dataset, its columns, its split and augmentation."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, model_validator

from raykd.core.spec.section import MAX_SEED, Section

__all__ = ["DataSpec", "FeaturesSpec"]


class FeaturesSpec(Section):
    """Which columns of a CSV/Parquet table are features, and how categories are capped.

    Without ``include`` every column but the label is a candidate; a column that looks
    like a row index (``Unnamed: 0``, ``index``, ``id``, or the values 0..N-1 / 1..N) and
    columns the training split leaves empty or constant are dropped, each with its
    reason in the job's log and ``result.json``. Rules: :mod:`raykd.data.table_columns`
    and :mod:`raykd.data.table_prep`.
    """

    include: tuple[Annotated[str, Field(min_length=1)], ...] | None = Field(
        default=None, min_length=1, max_length=10_000,
        description="Exactly these feature columns (an index-like column only when named here); "
        "null = every usable column.",
    )
    exclude: tuple[Annotated[str, Field(min_length=1)], ...] = Field(
        default=(), max_length=10_000, description="Columns never used as features."
    )
    max_levels: int = Field(
        default=50, ge=1, le=1000,
        description="Most one-hot levels per categorical column; rarer values go to level "
        "'(other)'.",
    )
    min_level_count: int = Field(
        default=3, ge=1, le=1_000_000,
        description="A category seen fewer times in the training split goes to level '(other)'.",
    )

    @model_validator(mode="after")
    def _no_overlap(self) -> FeaturesSpec:
        both = sorted(set(self.include or ()) & set(self.exclude))
        if both:
            raise ValueError(f"columns {both} are in both include and exclude; name each in one")
        for name, names in (("include", self.include or ()), ("exclude", self.exclude)):
            twice = sorted({n for n in names if names.count(n) > 1})
            if twice:
                raise ValueError(f"{name} names {twice} more than once")
        return self


class DataSpec(Section):
    """Where the examples come from and how they are split."""

    dataset: str = Field(
        default="mnist",
        description="A built-in dataset (mnist, digits, diamonds, bbc-news, bbc-speakers), a path "
        "to .npz, .parquet, .csv, .jsonl or a SQuAD .json, or an image folder "
        "root/<class name>/*.png|jpg|jpeg.",
    )
    image_size: tuple[Annotated[int, Field(ge=1, le=4096)],
                      Annotated[int, Field(ge=1, le=4096)]] | None = Field(
        default=None,
        description="Image folders only: [height, width] every image is resized to; null = the "
        "first image's size.",
    )
    label_column: str = Field(
        default="label",
        description="Label column of a Parquet/CSV file: text, integers or booleans (class names "
        "kept).",
    )
    text_column: str | None = Field(
        default=None, min_length=1,
        description="CSV/Parquet/JSONL only: the column of raw text; the file is then a text "
        "dataset labelled by label_column (models name: hf tokenize it themselves). Built-in "
        "bbc-news is text already.",
    )
    text_pair_column: str | None = Field(
        default=None, min_length=1,
        description="With text_column: a second text column; each example is a pair of texts "
        "(e.g. premise and hypothesis).",
    )
    max_length: int = Field(
        default=384, ge=16, le=4096,
        description="Span data only (bbc-speakers, SQuAD .json, or .jsonl/.parquet with question, "
        "context and answers): tokens per window (question, context and special tokens).",
    )
    doc_stride: int = Field(
        default=128, ge=0, le=4096,
        description="Span data only: tokens of context shared by consecutive windows of one "
        "context.",
    )
    max_query_length: int = Field(
        default=64, ge=1, le=4096,
        description="Span data only: questions are cut to this many tokens.",
    )
    image_column: str | None = Field(
        default=None, min_length=1,
        description="Parquet only: the column of encoded images (PNG/JPEG bytes, or structs with a "
        "'bytes' field); the file is then an image dataset labelled by label_column.",
    )
    features: FeaturesSpec = Field(
        default_factory=FeaturesSpec,
        description="Feature columns of a Parquet/CSV file (include/exclude) and category caps.",
    )
    val_fraction: float = Field(
        default=0.1, gt=0.0, le=0.9,
        description="Held-out validation share (> 0: each student's best epoch is chosen on it).",
    )
    test_fraction: float = Field(
        default=0.2, ge=0.0, le=0.9, description="Test share for data without its own test set."
    )
    seed: int = Field(
        default=0, ge=0, le=MAX_SEED, description="Seed of the train/validation/test split."
    )
    train_limit: int | None = Field(
        default=None, ge=1, description="Use only the first N training examples (fast runs)."
    )
    augment: bool = Field(
        default=False,
        description="Random shifts and noise on training images; teachers then serve logits "
        "online.",
    )
