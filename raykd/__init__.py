"""raykd: distributed ensemble knowledge distillation on Ray.

The public surface::

    from raykd import JobSpec, load_spec, run_job
    result = run_job(load_spec("mnist-wkd"))

Attributes are imported lazily so that ``import raykd.losses`` pulls in neither Ray nor
the rest of the package.
"""

from __future__ import annotations

from typing import Any

from raykd.core.version import __version__

__all__ = ["JobSpec", "load_spec", "parse_spec", "run_job", "__version__"]


def __getattr__(name: str) -> Any:
    if name in ("JobSpec", "load_spec", "parse_spec"):
        from raykd.core import spec

        return getattr(spec, name)
    if name == "run_job":
        from raykd.engine import run_job

        return run_job
    raise AttributeError(f"module 'raykd' has no attribute {name!r}")
