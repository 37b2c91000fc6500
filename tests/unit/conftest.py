"""Unit tests run without a Ray cluster (tests/README.md): the one the test session keeps
for tests/integration/ (collected before tests/unit/) is shut down first, so that nothing
here sees its workers or its CPUs (a row monitor counted them as its own; ``node_cpus()``
would be capped at the cluster's)."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest


@pytest.fixture(scope="package", autouse=True)
def _no_ray_cluster_in_unit_tests() -> Iterator[None]:
    if "ray" in sys.modules:
        import ray

        if ray.is_initialized():
            ray.shutdown()
    yield
