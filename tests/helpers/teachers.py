"""A small MLP teacher built from a seed, inputs for it, and the check that a caller got the
logits of its own rows (the teacher server's tests, with Ray and without)."""

from __future__ import annotations

import numpy as np

from raykd.teachers import Teacher

MLP = {"name": "mlp", "hidden": [16]}
SHAPE, CLASSES = (6,), 4
SEEDS = (11, 12)


def reference(seed: int) -> Teacher:
    """The teacher an actor built from ``seed`` holds, built here (same seed, same weights)."""
    return Teacher(0, MLP, SHAPE, CLASSES, seed=seed)


def inputs(rng: np.random.Generator, rows: int) -> np.ndarray:
    return rng.normal(size=(rows, *SHAPE)).astype(np.float32)


def assert_own_rows(x: np.ndarray, got: np.ndarray, ref: Teacher) -> None:
    assert got.shape == (len(x), CLASSES)
    np.testing.assert_allclose(got, ref.logits(x), rtol=1e-5, atol=1e-6)
