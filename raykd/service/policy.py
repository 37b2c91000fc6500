"""What a submitted spec may touch: built-in datasets, files under the data roots, and the
service's own storage. Checked before a job is stored; a violation is a 422 naming the field.

The service sets ``storage`` itself (every job writes under ``RAYKD_STORAGE``); a spec's
``cache.dir`` must be an absolute path under ``<storage>/cache``; data files and checkpoints must lie under one of
``RAYKD_DATA_ROOTS`` (none configured: built-in datasets only). Paths are resolved
(``..`` and symlinks) before they are compared.
"""

from __future__ import annotations

from pathlib import Path

from raykd.jobdir import BUILTIN_DATASETS
from raykd.service.settings import Settings
from raykd.spec import JobSpec


class PolicyError(ValueError):
    """A spec that names something this service does not allow; the message names the field."""


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
    root = settings.storage / "cache"
    if not Path(value).is_absolute() or not _inside(Path(value), [root]):
        raise PolicyError(f"cache.dir={value!r}: give an absolute path under {root} (the "
                          "service's shared cache), or leave it out to use that cache")


def admit(spec: JobSpec, settings: Settings) -> JobSpec:
    """The spec this service will run: storage set to its own; every path checked.

    ``faults`` (fault injection, :mod:`raykd.faults`) only where the operator allowed it.
    """
    if spec.faults is not None and not settings.allow_fault_injection:
        raise PolicyError("faults: fault injection is off in this service (its operator can "
                          "allow it with RAYKD_ALLOW_FAULT_INJECTION=true, for testing only)")
    if spec.data.dataset not in BUILTIN_DATASETS:
        _check_file("data.dataset", spec.data.dataset, settings)
    for i, t in enumerate(spec.teachers):
        if t.checkpoint is not None:
            _check_file(f"teachers.{i}.checkpoint", t.checkpoint, settings)
    if spec.student.checkpoint is not None:
        _check_file("student.checkpoint", spec.student.checkpoint, settings)
    if spec.cache.dir is not None:
        _check_cache_dir(spec.cache.dir, settings)
    return spec.model_copy(update={"storage": str(settings.storage)})
