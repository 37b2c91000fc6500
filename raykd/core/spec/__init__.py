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

The sections live in submodules named for what they hold (``data``, ``models``,
``training``, ``sweep``; ``job`` holds the whole spec and the readers); every public name is
re-exported here, so ``from raykd.core.spec import JobSpec`` is the one way to import them.
"""

from __future__ import annotations

from raykd.core.errors import SpecError
from raykd.core.spec.data import DataSpec, FeaturesSpec
from raykd.core.spec.job import JobSpec, load_spec, parse_spec
from raykd.core.spec.models import (
    HF_FIELDS,
    HF_INT_KEYS,
    HF_MODEL_TYPES,
    MODEL_NAMES,
    PACKAGE_PATH,
    REGISTRY_FIELDS,
    ModelSpec,
    TeacherSpec,
    check_hf_config,
)
from raykd.core.spec.section import MAX_SEED, Section
from raykd.core.spec.sweep import BOUNDS, ParamSpace, SweepSpec
from raykd.core.spec.training import (
    DEFAULT_TEMPERATURE,
    CacheSpec,
    MethodName,
    MethodSpec,
    ScalingSpec,
    TeacherTrainSpec,
    TrainSpec,
)
from raykd.core.spec_io import example_names, example_path, read_mapping

__all__ = [
    "BOUNDS", "DEFAULT_TEMPERATURE", "HF_FIELDS", "HF_INT_KEYS", "HF_MODEL_TYPES", "MAX_SEED",
    "MODEL_NAMES", "PACKAGE_PATH", "REGISTRY_FIELDS", "CacheSpec", "DataSpec", "FeaturesSpec",
    "JobSpec", "MethodName", "MethodSpec", "ModelSpec", "ParamSpace", "ScalingSpec", "Section",
    "SpecError", "SweepSpec", "TeacherSpec", "TeacherTrainSpec", "TrainSpec", "check_hf_config",
    "example_names", "example_path", "load_spec", "parse_spec", "read_mapping",
]
