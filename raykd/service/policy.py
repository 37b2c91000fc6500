"""What a submitted spec may touch: built-in datasets, files under the data roots, and the
service's own storage. Checked before a job is stored; a violation is a 422 naming the field.

The service sets ``storage`` itself (every job writes under ``RAYKD_STORAGE``); a spec's
``cache.dir`` must be an absolute path under ``<storage>/cache``; data files and checkpoints must lie under one of
``RAYKD_DATA_ROOTS`` (none configured: built-in datasets only). Paths are resolved
(``..`` and symlinks) before they are compared.
"""

from __future__ import annotations

import math
from pathlib import Path

from raykd.core.jobdir import BUILTIN_DATASETS
from raykd.core.spec import JobSpec
from raykd.service.capacity import Capacity
from raykd.service.settings import Settings


class PolicyError(ValueError):
    """A spec that names something this service does not allow; the message names the field."""


class LimitError(PolicyError):
    """A job past a limit of this service or of its cluster; the message names the limit."""


def _inside(path: Path, roots: list[Path]) -> bool:
    real = path.expanduser().resolve()
    return any(real.is_relative_to(root.expanduser().resolve()) for root in roots)


def _check_file(field: str, value: str, settings: Settings) -> None:
    path = Path(value)
    if not path.is_absolute():
        raise PolicyError(f"{field}={value!r}: give an absolute path under a data root "
                          f"({[str(r) for r in settings.data_roots] or 'none configured'})")
    if not _inside(path, settings.data_roots):
        roots = [str(r) for r in settings.data_roots]
        raise PolicyError(f"{field}={value!r} is outside the data roots this service allows "
                          f"({roots or 'none configured: built-in datasets only'})")


def _check_cache_dir(value: str, settings: Settings) -> None:
    """``cache.dir`` must be an absolute path under ``<storage>/cache``.

    Not anywhere in storage: a cache inside another job's directory would show up among
    that job's artifacts (or block its start), and ``.service`` holds the service's secrets.
    A relative path would be resolved by the driver against its own working directory.
    """
    root = settings.layout.cache
    if not Path(value).is_absolute() or not _inside(Path(value), [root]):
        raise PolicyError(f"cache.dir={value!r}: give an absolute path under {root} (the "
                          "service's shared cache), or leave it out to use that cache")


def admit(spec: JobSpec, settings: Settings) -> JobSpec:
    """The spec this service will run: storage set to its own; every path checked.

    ``faults`` (fault injection, :mod:`raykd.core.faults`) only where the operator allowed it.
    """
    if spec.faults is not None and not settings.allow_fault_injection:
        raise PolicyError("faults: fault injection is off in this service (its operator can "
                          "allow it with RAYKD_ALLOW_FAULT_INJECTION=true, for testing only)")
    if spec.scaling.student_runner == "driver":
        raise PolicyError(
            "scaling.student_runner='driver' trains the students in the job's driver process, "
            "which this service runs beside its Ray head, outside Ray's CPU and memory "
            "accounting and the service's limits; use 'auto' (a student actor here) or 'actor'")
    if spec.data.dataset not in BUILTIN_DATASETS:
        _check_file("data.dataset", spec.data.dataset, settings)
    for i, t in enumerate(spec.teachers):
        if t.checkpoint is not None:
            _check_file(f"teachers.{i}.checkpoint", t.checkpoint, settings)
    if spec.student.checkpoint is not None:
        _check_file("student.checkpoint", spec.student.checkpoint, settings)
    models = [(f"teachers.{i}.model", t.model) for i, t in enumerate(spec.teachers)]
    for where, model in [*models, ("student.model", spec.student.model)]:
        for field in ("path", "tokenizer"):
            value = getattr(model, field)
            if model.name == "hf" and value is not None and not value.startswith("package:"):
                _check_file(f"{where}.{field}", value, settings)  # a folder: under the data roots
    if spec.cache.dir is not None:
        _check_cache_dir(spec.cache.dir, settings)
    return spec.model_copy(update={"storage": str(settings.storage)})


def _trials(spec: JobSpec) -> int:
    """Trials a sweep runs: for grid, every combination of the listed values x num_samples."""
    sweep = spec.sweep
    if sweep is None:
        return 0
    if sweep.searcher != "grid":
        return sweep.num_samples
    lists = [getattr(sweep, name) for name in ("incorrect_weight", "temperature", "alpha")]
    combos = math.prod(len(s.values) for s in lists if s is not None and s.values is not None)
    return combos * len(sweep.method or [None]) * sweep.num_samples


def job_gpus(spec: JobSpec) -> int:
    """GPUs the job holds for sure: one per student worker with ``use_gpu: true``."""
    return spec.scaling.num_workers if spec.scaling.use_gpu is True else 0


def _model_sizes(spec: JobSpec, settings: Settings) -> list[tuple[str, float, float, str]]:
    """(field, value, limit, setting) of every model's hidden layer count and largest width."""
    out: list[tuple[str, float, float, str]] = []
    models = [(f"teachers.{i}.model", t.model) for i, t in enumerate(spec.teachers)]
    for where, model in [*models, ("student.model", spec.student.model)]:
        if model.name == "mlp":
            out.append((f"{where}.hidden (layers)", len(model.hidden), settings.max_hidden_layers,
                        "RAYKD_MAX_HIDDEN_LAYERS"))
            out.append((f"{where}.hidden", max(model.hidden, default=0), settings.max_hidden_units,
                        "RAYKD_MAX_HIDDEN_UNITS"))
        elif model.name == "cnn":
            out.append((f"{where}.width", model.width, settings.max_hidden_units, "RAYKD_MAX_HIDDEN_UNITS"))
        elif model.name == "hf":
            config = model.config or {}
            layers = model.num_hidden_layers or config.get("num_hidden_layers")
            if isinstance(layers, int | float):
                out.append((f"{where}.num_hidden_layers", layers, settings.max_hidden_layers,
                            "RAYKD_MAX_HIDDEN_LAYERS"))
            for key in ("hidden_size", "intermediate_size"):
                if isinstance(config.get(key), int | float):
                    out.append((f"{where}.config.{key}", config[key], settings.max_hidden_units,
                                "RAYKD_MAX_HIDDEN_UNITS"))
    return out


def check_limits(spec: JobSpec, settings: Settings) -> None:
    """A user's spec within the per-user limits; LimitError naming the field and the setting."""
    checks: list[tuple[str, float, float, str]] = [
        ("scaling.num_workers", spec.scaling.num_workers, settings.max_workers, "RAYKD_MAX_WORKERS"),
        ("scaling.cpus_per_worker", spec.scaling.cpus_per_worker, settings.max_cpus_per_worker,
         "RAYKD_MAX_CPUS_PER_WORKER"),
        ("GPUs (scaling.use_gpu: true holds one per worker)", job_gpus(spec), settings.max_gpus,
         "RAYKD_MAX_GPUS"),
        ("train.epochs", spec.train.epochs, settings.max_epochs, "RAYKD_MAX_EPOCHS"),
        ("teacher_train.epochs", spec.teacher_train.epochs, settings.max_epochs, "RAYKD_MAX_EPOCHS"),
        ("teachers", len(spec.teachers), settings.max_teachers, "RAYKD_MAX_TEACHERS"),
        ("sweep trials (grid combinations x num_samples)", _trials(spec), settings.max_trials,
         "RAYKD_MAX_TRIALS"),
        *_model_sizes(spec, settings),
    ]
    for field, value, limit, setting in checks:
        if value > limit:
            raise LimitError(f"{field}={value:g} is over this service's limit of {limit:g} per job "
                             f"({setting}); ask for less, or ask the operator")


def check_fit(spec: JobSpec, capacity: Capacity | None) -> None:
    """LimitError when the cluster can never place the job's student workers (None: unknown)."""
    if capacity is None:
        return
    s, gpus = spec.scaling, job_gpus(spec)
    needs = [
        (s.cpus_per_worker > capacity.node_cpus, f"scaling.cpus_per_worker={s.cpus_per_worker:g} CPUs on "
         f"one node, and its largest node has {capacity.node_cpus:g} CPUs"),
        (s.num_workers * s.cpus_per_worker > capacity.cpus, f"scaling.num_workers x cpus_per_worker = "
         f"{s.num_workers * s.cpus_per_worker:g} CPUs at once, and the cluster has {capacity.cpus:g} "
         f"CPUs ({capacity.nodes} node(s))"),
        (gpus > capacity.gpus, f"{gpus} GPUs (scaling.use_gpu: true, one per worker), and the cluster "
         f"has {capacity.gpus:g} GPUs"),
    ]
    for never, what in needs:
        if never:
            raise LimitError(f"the Ray cluster can never place this job: it needs {what}")


def check_priority(priority: int, admin: bool, settings: Settings) -> None:
    """Only the admin may set a priority above ``max_user_priority``."""
    if not admin and priority > settings.max_user_priority:
        raise LimitError(f"priority={priority} is above {settings.max_user_priority}, the highest a user "
                         "may set (RAYKD_MAX_USER_PRIORITY); only the admin may set more")


def deadline(max_run_s: float | None, settings: Settings) -> float:
    """The job's ``max_run_s``: its own (at most the cap) or the service's default."""
    if max_run_s is not None and max_run_s > settings.max_run_s_cap:
        raise LimitError(f"max_run_s={max_run_s:g} is over {settings.max_run_s_cap:g} s, the longest "
                         "a job may run here (RAYKD_MAX_RUN_S_CAP)")
    return min(max_run_s or settings.default_max_run_s, settings.max_run_s_cap)
