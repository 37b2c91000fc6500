"""Shared fixtures: a real local Ray per module, and small specs on scikit-learn's digits."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAYKD_TEST", "1")


@pytest.fixture(scope="module")
def ray_local() -> Iterator[None]:
    """A real local Ray cluster (2 CPUs, dashboard on loopback: Ray Train queries it)."""
    import ray

    from raykd.engine.prepare import ensure_ray

    if ray.is_initialized():
        ray.shutdown()
    ensure_ray(num_cpus=2)
    yield
    ray.shutdown()


def digits_spec(storage: str, **overrides: Any) -> dict[str, Any]:
    """A spec mapping for a fast job: 3 small MLP teachers and an MLP student on digits."""
    spec: dict[str, Any] = {
        "name": "test-digits",
        "data": {"dataset": "digits", "seed": 0},
        "teachers": [{"model": {"name": "mlp", "hidden": [32]}, "seed": s} for s in (1, 2, 3)],
        "teacher_train": {"epochs": 8, "batch_size": 64, "lr": 0.003},
        "student": {"model": {"name": "mlp", "hidden": [32]}},
        "train": {"epochs": 4, "batch_size": 64, "lr": 0.003},
        "methods": [{"method": "kd"}],
        "scaling": {"num_workers": 1},
        "storage": storage,
    }
    spec.update(overrides)
    return spec
