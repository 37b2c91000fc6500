"""Tests for raykd.data: built-in datasets, user files, splits, fingerprints, errors."""

from __future__ import annotations

import ast
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from raykd.data import DATASETS, FILE_SUFFIXES, DataError, Dataset, Split, load_dataset
from tests.helpers.paths import PACKAGE

DATA_DIR = PACKAGE / "data"


def _assert_split_ok(split: Split, input_shape: tuple[int, ...]) -> None:
    assert split.x.dtype == np.float32 and split.x.flags.c_contiguous
    assert split.y.dtype == np.int64 and split.y.shape == (len(split),)
    assert split.x.shape == (len(split), *input_shape)
    assert len(split.fingerprint) == 16 and int(split.fingerprint, 16) >= 0


def _assert_same(a: Dataset, b: Dataset) -> None:
    for name in ("train", "val", "test"):
        sa, sb = getattr(a, name), getattr(b, name)
        assert sa.fingerprint == sb.fingerprint
        assert sa.x.tobytes() == sb.x.tobytes() and sa.y.tobytes() == sb.y.tobytes()


def _tabular(n: int = 60, d: int = 4, classes: tuple[int, ...] = (0, 1, 2)) -> tuple:
    rng = np.random.default_rng(123)
    x = rng.normal(3.0, 2.0, size=(n, d))
    y = np.array([classes[i % len(classes)] for i in range(n)], dtype=np.int64)
    return x, y


# --- built-in datasets -----------------------------------------------------------


def test_registry_lists_builtins() -> None:
    assert sorted(DATASETS) == ["diamonds", "digits", "mnist"]
    assert FILE_SUFFIXES == (".csv", ".jsonl", ".npz", ".parquet")


@pytest.fixture(scope="module")
def mnist() -> Dataset:
    start = time.perf_counter()
    data = load_dataset("mnist", val_fraction=0.1, seed=0)
    assert time.perf_counter() - start < 30
    return data


def test_mnist_shapes_dtypes_ranges(mnist: Dataset) -> None:
    data = mnist
    assert (len(data.train), len(data.val), len(data.test)) == (54_000, 6_000, 10_000)
    assert data.num_classes == 10 and data.input_shape == (1, 28, 28) and data.is_image
    assert data.name == "mnist"
    for split in (data.train, data.val, data.test):
        _assert_split_ok(split, (1, 28, 28))
        assert split.x.min() == pytest.approx((0 - 0.1307) / 0.3081, abs=1e-5)
        assert split.x.max() == pytest.approx((1 - 0.1307) / 0.3081, abs=1e-5)
        assert set(np.unique(split.y)) == set(range(10))
    assert abs(float(data.train.x.mean())) < 0.05
    assert abs(float(data.train.x.std()) - 1.0) < 0.05


def test_mnist_test_split_is_official_and_val_depends_on_seed(mnist: Dataset) -> None:
    other = load_dataset("mnist", seed=1)
    assert other.test.fingerprint == mnist.test.fingerprint
    assert other.val.fingerprint != mnist.val.fingerprint
    assert other.train.fingerprint != mnist.train.fingerprint


def test_mnist_is_deterministic_and_cached(mnist: Dataset) -> None:
    start = time.perf_counter()
    _assert_same(load_dataset("mnist", seed=0), mnist)
    assert time.perf_counter() - start < 10  # decoded arrays are cached


def test_mnist_train_limit_takes_prefix_of_shuffled_train(mnist: Dataset) -> None:
    small = load_dataset("mnist", seed=0, train_limit=500)
    assert len(small.train) == 500 and len(small.val) == 6_000
    np.testing.assert_array_equal(small.train.y, mnist.train.y[:500])
    np.testing.assert_array_equal(small.train.x, mnist.train.x[:500])  # fixed normalization
    assert small.val.fingerprint == mnist.val.fingerprint


def test_train_limit_above_size_keeps_all() -> None:
    full = load_dataset("digits", seed=2)
    assert load_dataset("digits", seed=2, train_limit=10**9).train.fingerprint == (
        full.train.fingerprint
    )


def test_digits_split_sizes_and_standardization() -> None:
    data = load_dataset("digits", val_fraction=0.1, test_fraction=0.2, seed=0)
    assert len(data.train) + len(data.val) + len(data.test) == 1797
    assert len(data.test) == round(0.2 * 1797) and len(data.val) == round(0.1 * 1797)
    assert data.num_classes == 10 and data.input_shape == (1, 8, 8) and data.is_image
    for split in (data.train, data.val, data.test):
        _assert_split_ok(split, (1, 8, 8))
    assert float(data.train.x.mean()) == pytest.approx(0.0, abs=1e-5)
    assert float(data.train.x.std()) == pytest.approx(1.0, abs=1e-4)
    all_y = np.concatenate([data.train.y, data.val.y, data.test.y])
    assert np.bincount(all_y).tolist() == np.bincount(DATASETS["digits"]().y).tolist()


# --- determinism and fingerprints --------------------------------------------------


def test_same_arguments_give_identical_splits() -> None:
    _assert_same(load_dataset("digits", seed=7), load_dataset("digits", seed=7))


def test_different_seed_changes_splits_and_fingerprints() -> None:
    a, b = load_dataset("digits", seed=0), load_dataset("digits", seed=1)
    assert a.val.fingerprint != b.val.fingerprint
    assert a.test.fingerprint != b.test.fingerprint
    assert a.train.fingerprint != b.train.fingerprint


def test_fingerprints_differ_between_splits() -> None:
    data = load_dataset("digits")
    prints = {data.train.fingerprint, data.val.fingerprint, data.test.fingerprint}
    assert len(prints) == 3


def test_test_split_does_not_depend_on_val_fraction() -> None:
    a = load_dataset("digits", val_fraction=0.1, seed=4)
    b = load_dataset("digits", val_fraction=0.3, seed=4)
    np.testing.assert_array_equal(a.test.y, b.test.y)


def test_fingerprint_tracks_content_shape_and_dtype() -> None:
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    y = np.array([0, 1, 2])
    base = Split.from_arrays(x, y).fingerprint
    assert Split.from_arrays(x.copy(), y.copy()).fingerprint == base
    changed = x.copy()
    changed[1, 2] += 1e-3
    assert Split.from_arrays(changed, y).fingerprint != base
    assert Split.from_arrays(x, np.array([0, 2, 1])).fingerprint != base
    assert Split.from_arrays(x.reshape(3, 2, 2), y).fingerprint != base


def test_split_rejects_wrong_dtypes() -> None:
    with pytest.raises(DataError, match="float32"):
        Split(x=np.zeros((2, 3)), y=np.zeros(2, dtype=np.int64), fingerprint="0")
    with pytest.raises(DataError, match="3 rows"):
        Split(x=np.zeros((3, 1), np.float32), y=np.zeros(2, np.int64), fingerprint="0")


# --- user files ----------------------------------------------------------------------


def test_npz_tabular_round_trip(tmp_path: Path) -> None:
    x, y = _tabular(n=100)
    path = tmp_path / "table.npz"
    np.savez(path, x=x, y=y)
    data = load_dataset(path, val_fraction=0.1, test_fraction=0.2, seed=0)
    assert data.name == "table" and not data.is_image and data.input_shape == (4,)
    assert (len(data.train), len(data.val), len(data.test)) == (70, 10, 20)
    for split in (data.train, data.val, data.test):
        _assert_split_ok(split, (4,))
    np.testing.assert_allclose(data.train.x.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(data.train.x.std(axis=0), 1.0, atol=1e-4)
    # Rows are kept intact: undoing the standardization recovers the original rows.
    all_x = np.concatenate([data.train.x, data.val.x, data.test.x])
    assert sorted(np.concatenate([data.train.y, data.val.y, data.test.y])) == sorted(y)
    assert all_x.shape == (100, 4)
    _assert_same(data, load_dataset(str(path), seed=0))


def test_npz_with_official_test_and_images(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(50, 6, 6), dtype=np.uint8)
    x_test = rng.integers(0, 256, size=(8, 6, 6), dtype=np.uint8)
    y, y_test = np.arange(50) % 3, np.arange(8) % 3
    path = tmp_path / "imgs.npz"
    np.savez(path, x=x, y=y, x_test=x_test, y_test=y_test)
    data = load_dataset(path, val_fraction=0.2, test_fraction=0.5)
    assert data.is_image and data.input_shape == (1, 6, 6)
    assert (len(data.train), len(data.val), len(data.test)) == (40, 10, 8)
    np.testing.assert_array_equal(data.test.y, y_test)
    assert data.train.x.mean() == pytest.approx(0.0, abs=1e-5)


def test_parquet_round_trip_with_sparse_labels(tmp_path: Path) -> None:
    x, y = _tabular(n=40, d=3, classes=(3, 7))
    frame = pd.DataFrame(x, columns=["a", "b", "c"]).assign(target=y, note="text")
    path = tmp_path / "table.parquet"
    frame.to_parquet(path)
    data = load_dataset(path, label_column="target", val_fraction=0.25, test_fraction=0.25)
    # classes {3, 7} are renumbered 0, 1 and keep their values as names; the constant
    # text column 'note' is dropped with its reason (see tests/unit/data/test_tables.py)
    assert data.num_classes == 2 and data.class_names == ("3", "7") and data.input_shape == (3,)
    assert (len(data.train), len(data.val), len(data.test)) == (20, 10, 10)
    assert set(np.concatenate([data.train.y, data.val.y, data.test.y])) == {0, 1}
    assert data.table is not None and data.table.dropped[0]["column"] == "note"


def test_csv_round_trip(tmp_path: Path) -> None:
    x, y = _tabular(n=30, d=2)
    path = tmp_path / "table.csv"
    pd.DataFrame({"label": y, "f1": x[:, 0], "f2": x[:, 1]}).to_csv(path, index=False)
    data = load_dataset(path, seed=5)
    assert data.name == "table" and data.num_classes == 3 and data.input_shape == (2,)
    assert len(data.train) + len(data.val) + len(data.test) == 30
    _assert_same(data, load_dataset(path, seed=5))
    assert load_dataset(path, seed=6).val.fingerprint != data.val.fingerprint


def test_constant_feature_column_is_left_finite(tmp_path: Path) -> None:
    x, y = _tabular(n=30, d=2)
    x[:, 1] = 5.0
    path = tmp_path / "const.npz"
    np.savez(path, x=x, y=y)
    data = load_dataset(path)
    assert np.isfinite(data.train.x).all()
    np.testing.assert_allclose(data.train.x[:, 1], 0.0)


# --- bad input -----------------------------------------------------------------------


def _raises(match: str, source: object, **kwargs: object) -> str:
    with pytest.raises(DataError, match=match) as info:
        load_dataset(source, **kwargs)  # type: ignore[arg-type]
    message = str(info.value)
    assert "\n" not in message
    return message


def test_unknown_builtin_lists_choices() -> None:
    message = _raises("'cifar'", "cifar")
    assert "digits" in message and "mnist" in message
    assert ".npz" in message and ".parquet" in message and ".csv" in message


def test_unknown_suffix(tmp_path: Path) -> None:
    path = tmp_path / "data.txt"
    path.write_text("1,2\n")
    _raises("data.txt", path)


def test_missing_file_names_path(tmp_path: Path) -> None:
    _raises("nope.npz.*does not exist", tmp_path / "nope.npz")


@pytest.mark.parametrize("suffix", [".npz", ".parquet"])
def test_corrupt_file_names_path_and_format(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"broken{suffix}"
    path.write_bytes(b"this is not a real file \x00\x01\x02")
    _raises(rf"could not read '.*broken\{suffix}' as \{suffix}: ", path)


def test_npz_with_broken_zip_body(tmp_path: Path) -> None:
    path = tmp_path / "cut.npz"
    x, y = _tabular()
    np.savez(path, x=x, y=y)
    path.write_bytes(path.read_bytes()[:100])
    _raises(r"could not read '.*cut\.npz' as \.npz: ", path)


def test_npz_holding_one_array(tmp_path: Path) -> None:
    path = tmp_path / "one.npz"
    with path.open("wb") as handle:
        np.save(handle, np.zeros(3))
    _raises("single array", path)


def test_csv_with_no_rows(tmp_path: Path) -> None:
    path = tmp_path / "empty.csv"
    path.write_text("")
    _raises(r"could not read '.*empty\.csv' as \.csv: ", path)


def test_npz_missing_arrays_names_keys_found(tmp_path: Path) -> None:
    path = tmp_path / "keys.npz"
    np.savez(path, features=np.zeros((4, 2)), labels=np.zeros(4))
    _raises(r"'x' and 'y'.*found keys \['features', 'labels'\]", path)


def test_npz_with_only_x_test(tmp_path: Path) -> None:
    x, y = _tabular()
    path = tmp_path / "half.npz"
    np.savez(path, x=x, y=y, x_test=x[:5])
    _raises("both x_test and y_test", path)


def test_npz_test_shape_mismatch(tmp_path: Path) -> None:
    x, y = _tabular()
    path = tmp_path / "shape.npz"
    np.savez(path, x=x, y=y, x_test=x[:5, :2], y_test=y[:5])
    _raises(r"per-example shape \(2,\); expected \(4,\)", path)


def test_missing_label_column_lists_columns(tmp_path: Path) -> None:
    path = tmp_path / "cols.csv"
    pd.DataFrame({"a": [1.0, 2.0], "klass": [0, 1]}).to_csv(path, index=False)
    _raises(r"label column 'label' not found.*\['a', 'klass'\]", path)


def test_non_integer_labels(tmp_path: Path) -> None:
    x, _ = _tabular(n=6)
    path = tmp_path / "float.npz"
    np.savez(path, x=x, y=np.array([0, 1, 0.5, 1, 0, 1]))
    _raises(r"integers 0\.\.C-1; found 1 non-integer values, e\.g\. .*0\.5", path)


def test_non_integer_table_labels(tmp_path: Path) -> None:
    path = tmp_path / "names.csv"
    pd.DataFrame({"f": [1.0, 2.0, 3.0], "label": [0.5, 1.0, 0.5]}).to_csv(path, index=False)
    _raises(r"label column 'label'.*non-integer numbers, e\.g\. .*0\.5", path)


def test_negative_labels(tmp_path: Path) -> None:
    x, _ = _tabular(n=6)
    path = tmp_path / "neg.npz"
    np.savez(path, x=x, y=np.array([0, 1, -1, 1, 0, -3]))
    _raises(r"found 2 negative labels \(min -3\)", path)


def test_huge_labels(tmp_path: Path) -> None:
    x, _ = _tabular(n=6)
    path = tmp_path / "ids.npz"
    np.savez(path, x=x, y=np.array([0, 1, 2, 3, 4, 123_456_789]))
    _raises("go up to 123456789", path)


@pytest.mark.parametrize("labels", [np.full(6, 1e30), np.full(6, 2**63, dtype=np.uint64)])
def test_labels_beyond_int64_are_named_not_wrapped(tmp_path: Path, labels: np.ndarray) -> None:
    x, _ = _tabular(n=6)
    path = tmp_path / "wide.npz"
    np.savez(path, x=x, y=labels)
    message = _raises("go up to .*labels must be 0..C-1 with C <= 10000", path)
    assert "negative" not in message


def test_features_beyond_float32_are_rejected(tmp_path: Path) -> None:
    x, y = _tabular(n=20)
    x[2, 1] = -1e300
    path = tmp_path / "wide.npz"
    np.savez(path, x=x, y=y)
    _raises(r"features in '.*wide\.npz' reach magnitude 1e\+300; features must fit float32", path)


def test_examples_without_features(tmp_path: Path) -> None:
    _, y = _tabular(n=20)
    path = tmp_path / "empty.npz"
    np.savez(path, x=np.zeros((20, 0)), y=y)
    _raises(r"shape \(20, 0\); each example needs at least one value", path)


def test_npz_that_cannot_be_opened(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    x, y = _tabular()
    path = tmp_path / "locked.npz"
    np.savez(path, x=x, y=y)

    real_open = os.open

    def denied(name: Any, *args: Any, **kwargs: Any) -> int:
        if str(name) == str(path):
            raise PermissionError(13, "Permission denied", str(name))
        return real_open(name, *args, **kwargs)

    monkeypatch.setattr(os, "open", denied)  # root can read any file, so chmod cannot test it
    _raises(r"data file '.*locked\.npz' could not be opened \(Permission denied\)", path)


def test_non_finite_features_are_counted(tmp_path: Path) -> None:
    x, y = _tabular(n=20)
    x[0, 0], x[3, 1], x[5, 2] = np.nan, np.inf, -np.inf
    path = tmp_path / "nan.npz"
    np.savez(path, x=x, y=y)
    _raises("3 non-finite values", path)


def test_missing_csv_values_are_filled_by_the_rule(tmp_path: Path) -> None:
    path = tmp_path / "gaps.csv"
    path.write_text("f,label\n" + "".join(f"{'' if i == 1 else i},{i % 2}\n" for i in range(20)))
    data = load_dataset(path, val_fraction=0.25, test_fraction=0.25)
    x = np.concatenate([data.train.x, data.val.x, data.test.x])
    assert np.isfinite(x).all()  # the gap is the training median (see tests/unit/data/test_tables.py)


def test_single_class(tmp_path: Path) -> None:
    x, _ = _tabular(n=20)
    path = tmp_path / "one.npz"
    np.savez(path, x=x, y=np.full(20, 4))
    _raises(r"1 distinct value\(s\) \[4\]; need at least 2 classes", path)


def test_bad_feature_shape(tmp_path: Path) -> None:
    path = tmp_path / "flat.npz"
    np.savez(path, x=np.zeros(10), y=np.arange(10) % 2)
    _raises(r"shape \(10,\)", path)


@pytest.mark.parametrize(
    ("field", "value"),
    [("val_fraction", 0.95), ("val_fraction", -0.1), ("test_fraction", 1.0),
     ("test_fraction", float("nan")), ("val_fraction", "0.1")],
)
def test_fraction_out_of_range(field: str, value: object) -> None:
    _raises(rf"{field}=.*expected a number in \[0, 0\.9\]", "digits", **{field: value})


@pytest.mark.parametrize(
    ("field", "value"), [("seed", -1), ("seed", 1.5), ("train_limit", 0)]
)
def test_bad_seed_or_limit(field: str, value: object) -> None:
    _raises(rf"{field}={value!r} is invalid", "digits", **{field: value})


def test_empty_split_after_splitting(tmp_path: Path) -> None:
    path = tmp_path / "tiny.npz"
    np.savez(path, x=np.zeros((4, 2)) + np.arange(4)[:, None], y=np.array([0, 1, 0, 1]))
    _raises(r"val_fraction=0\.1 of 4 examples.*empty split", path)
    _raises(r"train split is empty.*4 examples", path, val_fraction=0.5, test_fraction=0.5)


def test_zero_fraction_gives_empty_split(tmp_path: Path) -> None:
    x, y = _tabular(n=20)
    path = tmp_path / "nosplit.npz"
    np.savez(path, x=x, y=y)
    data = load_dataset(path, val_fraction=0.0, test_fraction=0.5)
    assert (len(data.train), len(data.val), len(data.test)) == (10, 0, 10)
    assert data.val.x.shape == (0, 4)


# --- module hygiene ------------------------------------------------------------------


def test_data_package_imports_only_numpy_at_top_level() -> None:
    forbidden = {"ray", "fastapi", "pydantic"}
    lazy = {"pandas", "pyarrow", "zarr", "sklearn", "torch"}
    for source in sorted(DATA_DIR.glob("*.py")):
        tree = ast.parse(source.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                roots = {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                roots = {node.module.split(".")[0]}
            else:
                continue
            assert not roots & forbidden, f"{source.name} imports {roots & forbidden}"
            if node.col_offset == 0:  # module level; TYPE_CHECKING blocks are indented
                assert not roots & lazy, f"{source.name} imports {roots & lazy} eagerly"


@pytest.mark.parametrize("source", ["digits", "diamonds", "npz"])
def test_every_array_source_records_its_scaling_and_raw_rows_replay_it(
        source: str, tmp_path: Path) -> None:
    """The training split's mean/std (or a built-in's fixed ones) are in the record; the raw
    test rows through the record read back are the test split, bit for bit."""
    from raykd.data import ArrayPrep, raw_test_rows

    if source == "npz":
        x, y = _tabular(n=120)
        np.savez(tmp_path / "rows.npz", x=x * 50 + 7, y=y)
        source = str(tmp_path / "rows.npz")
    data = load_dataset(source, seed=3, train_limit=500)
    record = data.prep_record
    assert record is not None and record["format"] == "raykd-array-preprocessing"
    prep = ArrayPrep.from_dict(json.loads(json.dumps(record)), "record")
    assert prep.input_shape == data.input_shape and prep.num_classes == data.num_classes
    assert "the training split" in prep.fitted_on
    raw, labels = raw_test_rows(source, seed=3)
    np.testing.assert_array_equal(prep.transform(raw), data.test.x)
    np.testing.assert_array_equal(labels, data.test.y)
    with pytest.raises(DataError, match=r"raw rows of shape"):
        prep.transform(raw.reshape(len(raw), -1)[:, :3])
