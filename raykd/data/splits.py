"""The pure functions that turn raw arrays into a :class:`~raykd.data.dataset.Dataset`.

Nothing here reads files or imports heavy libraries: the loaders in
:mod:`raykd.data.builtin` and :mod:`raykd.data.files` produce a
:class:`~raykd.data.dataset.RawData`, and :func:`build_dataset` validates it (with
:mod:`raykd.data.checks`), splits it by seed and standardizes it. The data types live in
:mod:`raykd.data.dataset`; this module re-exports them (and ``DataError``) for the modules
that import them from here.
"""

from __future__ import annotations

import numpy as np

from raykd.data.arrays import ArrayPrep
from raykd.data.checks import MAX_NUM_CLASSES, DataError, check_features, check_labels
from raykd.data.dataset import (
    FINGERPRINT_CHARS,
    X_DTYPES,
    Dataset,
    Preprocessing,
    RawData,
    Split,
    fingerprint,
)

__all__ = [
    "FINGERPRINT_CHARS", "X_DTYPES", "DataError", "Dataset", "Preprocessing", "RawData", "Split",
    "build_dataset", "dataset_indices", "fingerprint", "raw_test_split", "split_indices",
]


def _count_split(n: int, fraction: float, name: str, where: str) -> int:
    """Number of examples for a carved split; a positive fraction must give >= 1."""
    count = int(round(fraction * n))
    if fraction > 0 and count == 0:
        raise DataError(
            f"{name}={fraction} of {n} examples in {where} gives an empty split; "
            f"raise {name} or use more data"
        )
    return count


def split_indices(
    n: int, *, carve_test: bool, val_fraction: float, test_fraction: float, seed: int,
    where: str,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Shuffle ``range(n)`` by seed and cut it into test, validation and train.

    Fractions are of ``n``. The test cut comes first, so it does not depend on
    ``val_fraction``; the training indices keep their shuffled order.

    Returns:
        ``(train, val, test)`` index arrays; ``test`` is None unless ``carve_test``.
    """
    order = np.random.default_rng(seed).permutation(n)
    n_test = _count_split(n, test_fraction, "test_fraction", where) if carve_test else 0
    n_val = _count_split(n, val_fraction, "val_fraction", where)
    if n_test + n_val >= n:
        raise DataError(
            f"the train split is empty: {where} has {n} examples and val_fraction="
            f"{val_fraction}" + (f", test_fraction={test_fraction}" if carve_test else "")
            + " leave none; lower the fractions or use more data"
        )
    test = order[:n_test] if carve_test else None
    return order[n_test + n_val :], order[n_test : n_test + n_val], test


def _standardize(
    parts: list[np.ndarray], prep: Preprocessing, is_image: bool
) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """Apply ``prep`` to every part; statistics, if not fixed, come from ``parts[0]``.

    Returns:
        The parts, and the mean and standard deviation applied (float64).
    """
    floats = [np.array(part, dtype=np.float32, order="C") for part in parts]
    if prep.divisor != 1:
        for part in floats:
            part /= np.float32(prep.divisor)
    axes = (0, 2, 3) if is_image else (0,)
    if prep.mean is None:
        mean = floats[0].mean(axis=axes, dtype=np.float64, keepdims=True)
    else:
        mean = np.asarray(prep.mean, dtype=np.float64)
    if prep.std is None:
        std = floats[0].std(axis=axes, dtype=np.float64, keepdims=True)
        std = np.where(std > 1e-12, std, 1.0)
    else:
        std = np.asarray(prep.std, dtype=np.float64)
    for part in floats:
        part -= mean.astype(np.float32)
        part /= std.astype(np.float32)
    return floats, mean, std


def _num_classes(labels: list[np.ndarray], where: str) -> int:
    """``max + 1`` over all labels, after checking for at least two distinct classes."""
    distinct = np.unique(np.concatenate(labels))
    if len(distinct) < 2:
        raise DataError(
            f"labels in {where} have {len(distinct)} distinct value(s) "
            f"{distinct.tolist()}; need at least 2 classes"
        )
    num_classes = int(distinct[-1]) + 1
    if num_classes > MAX_NUM_CLASSES:
        raise DataError(
            f"labels in {where} go up to {num_classes - 1}; labels must be 0..C-1 "
            f"with C <= {MAX_NUM_CLASSES}"
        )
    return num_classes


def dataset_indices(
    n: int, *, carve_test: bool, val_fraction: float, test_fraction: float, seed: int,
    train_limit: int | None, where: str,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """:func:`split_indices`, then the first ``train_limit`` training indices.

    :func:`build_dataset` splits by this function, and so does the table loader before
    it fits its preprocessing on the training rows: both see the same rows.
    """
    train, val, test = split_indices(n, carve_test=carve_test, val_fraction=val_fraction,
                                     test_fraction=test_fraction, seed=seed, where=where)
    return (train if train_limit is None else train[:train_limit]), val, test


def build_dataset(
    name: str, raw: RawData, *, val_fraction: float, test_fraction: float, seed: int,
    train_limit: int | None,
) -> Dataset:
    """Validate raw arrays, split them by seed, standardize them and wrap them.

    Args:
        name: Dataset name.
        raw: Loader output.
        val_fraction: Fraction of the training pool held out for validation.
        test_fraction: Fraction held out for test when ``raw`` has no test set.
        seed: Seed of the shuffle that decides the splits.
        train_limit: Keep only the first N shuffled training examples; None keeps all.

    Returns:
        The dataset.
    """
    x, y, x_test, y_test = _checked_arrays(raw)
    train_idx, val_idx, test_idx = dataset_indices(
        len(y), carve_test=x_test is None, val_fraction=val_fraction,
        test_fraction=test_fraction, seed=seed, train_limit=train_limit, where=raw.where,
    )
    if test_idx is not None:
        x_test, y_test = x[test_idx], y[test_idx]
    assert x_test is not None and y_test is not None
    labels = [y[train_idx], y[val_idx], y_test]
    num_classes = _num_classes([y, y_test], raw.where)
    is_image = x.ndim == 4
    features, mean, std = _standardize([x[train_idx], x[val_idx], x_test], raw.preprocessing,
                                       is_image)
    train, val, test = (Split.from_arrays(f, lab) for f, lab in zip(features, labels, strict=True))
    input_shape = tuple(int(d) for d in x.shape[1:])
    fitted = raw.preprocessing.mean is None or raw.preprocessing.std is None
    arrays = ArrayPrep(
        input_shape=input_shape, divisor=float(raw.preprocessing.divisor),
        mean=tuple(float(v) for v in np.ravel(mean)), std=tuple(float(v) for v in np.ravel(std)),
        num_classes=num_classes, class_names=raw.class_names,
        fitted_on=(f"the training split: {len(train_idx)} examples (data.seed {seed})" if fitted
                   else f"no data: fixed for {raw.where}"))
    return Dataset(
        name=name, train=train, val=val, test=test, num_classes=num_classes,
        input_shape=input_shape, is_image=is_image, class_names=raw.class_names, arrays=arrays,
    )


def raw_test_split(raw: RawData, *, val_fraction: float, test_fraction: float, seed: int
                   ) -> tuple[np.ndarray, np.ndarray]:
    """The test split's raw (unscaled) rows and labels, the rows :func:`build_dataset` takes:
    the official test set, or the rows carved by seed."""
    x, y, x_test, y_test = _checked_arrays(raw)
    _, _, test_idx = dataset_indices(len(y), carve_test=x_test is None, val_fraction=val_fraction,
                                     test_fraction=test_fraction, seed=seed, train_limit=None,
                                     where=raw.where)
    if test_idx is not None:
        return x[test_idx], y[test_idx]
    assert x_test is not None and y_test is not None
    return x_test, y_test


def _checked_arrays(
    raw: RawData,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Validate the loader's arrays and their agreement; return them normalized."""
    x = check_features(np.asarray(raw.x), raw.where)
    y = check_labels(np.asarray(raw.y), raw.where, raw.label_name)
    if len(x) != len(y):
        raise DataError(f"{raw.where} has {len(x)} feature rows but {len(y)} labels")
    if len(y) == 0:
        raise DataError(f"{raw.where} has no examples")
    if (raw.x_test is None) != (raw.y_test is None):
        raise DataError(f"{raw.where} must give both x_test and y_test, or neither")
    if raw.x_test is None or raw.y_test is None:
        return x, y, None, None
    x_test = check_features(np.asarray(raw.x_test), raw.where, "test features")
    y_test = check_labels(np.asarray(raw.y_test), raw.where, "test labels")
    if len(y_test) == 0:
        raise DataError(f"the test set in {raw.where} is empty; give at least one example")
    if len(x_test) != len(y_test):
        raise DataError(
            f"{raw.where} has {len(x_test)} test feature rows but {len(y_test)} test labels"
        )
    if x_test.shape[1:] != x.shape[1:]:
        raise DataError(
            f"test features in {raw.where} have per-example shape {x_test.shape[1:]}; "
            f"expected {x.shape[1:]} like the training features"
        )
    return x, y, x_test, y_test
