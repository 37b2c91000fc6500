"""The whole job spec, its cross-section checks, and reading one (a mapping, a YAML file or a
bundled example) into a :class:`JobSpec` or one readable :class:`SpecError` line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, model_validator

from raykd.core.errors import SpecError
from raykd.core.faults import FaultSpec
from raykd.core.spec.data import DataSpec
from raykd.core.spec.models import TeacherSpec
from raykd.core.spec.section import Section
from raykd.core.spec.sweep import SweepSpec
from raykd.core.spec.training import (
    CacheSpec,
    MethodSpec,
    ScalingSpec,
    TeacherTrainSpec,
    TrainSpec,
)
from raykd.core.spec_io import read_mapping

__all__ = ["JobSpec", "load_spec", "parse_spec"]


class JobSpec(Section):
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
        default_factory=TeacherTrainSpec,
        description="Training of the teachers that have no checkpoint."
    )
    student: TeacherSpec = Field(
        description="Student architecture (its checkpoint, if any, is a warm start)."
    )
    train: TrainSpec = Field(default_factory=TrainSpec, description="Student training.")
    methods: list[MethodSpec] = Field(
        min_length=1, max_length=32, description="One student is trained per entry, for comparison."
    )
    scaling: ScalingSpec = Field(
        default_factory=ScalingSpec,
        description="Student workers (Ray Train DDP), their CPUs, GPUs and the teachers' GPU "
        "share.",
    )
    cache: CacheSpec = Field(
        default_factory=CacheSpec,
        description="The teacher-logit cache: reuse, directory, storage dtype and top-k.",
    )
    storage: str = Field(
        default="raykd-runs", description="Directory for job outputs and the cache."
    )
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
            raise ValueError(f"faults.kill_teacher={f.kill_teacher}: there are "
                             f"{len(self.teachers)} teachers (0..{len(self.teachers) - 1})")
        after = f.kill_student_after_epoch
        if after is not None and after >= self.train.epochs:
            raise ValueError(f"faults.kill_student_after_epoch={after}: give an epoch before the "
                             f"last (train.epochs={self.train.epochs})")
        if f.kill_student_at_step is not None and f.kill_student_after_epoch is not None:
            raise ValueError("faults: give kill_student_at_step or kill_student_after_epoch, not "
                             "both")
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
