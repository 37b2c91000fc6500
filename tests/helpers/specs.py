"""Spec mappings for small, fast jobs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from raykd.core.spec import JobSpec, parse_spec


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


GRID = {
    "searcher": "grid",
    "incorrect_weight": {"values": [0.5, 1.0]},
    "temperature": {"values": [2.0, 4.0]},
}


def sweep_spec(storage: str | Path, **sweep: Any) -> JobSpec:
    """:func:`digits_spec`, 2 epochs, base wkd, with a sweep section."""
    data = digits_spec(
        str(storage),
        teacher_train={"epochs": 3, "batch_size": 64, "lr": 0.003},
        train={"epochs": 2, "batch_size": 64, "lr": 0.003},
        methods=[{"method": "wkd", "temperature": 4.0, "alpha": 0.9}],
        cache={"dir": str(Path(storage) / "cache")},
        sweep=sweep or GRID,
    )
    return parse_spec(data)
