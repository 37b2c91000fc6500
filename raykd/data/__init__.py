"""Datasets for distillation jobs: built-ins and user files, split and fingerprinted.

Example:
    >>> from raykd.data import load_dataset
    >>> data = load_dataset("digits", seed=0)
    >>> data.train.x.shape[1:], data.num_classes
    ((1, 8, 8), 10)

``source`` is a built-in name (see :data:`DATASETS`) or a path to a ``.npz``
(arrays ``x``, ``y``, optionally ``x_test``, ``y_test``), ``.parquet`` or ``.csv`` file
(features: every numeric column except ``label_column``). Splits are deterministic in
``seed``; every bad input raises :class:`DataError` with a one-line message.

This package imports only numpy at import time; pandas, pyarrow, zarr and scikit-learn
are imported by the loaders that need them.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from raykd.data.builtin import load_diamonds, load_digits, load_mnist
from raykd.data.checks import check_fraction, check_seed, check_train_limit
from raykd.data.files import READERS
from raykd.data.splits import DataError, Dataset, RawData, Split, build_dataset

__all__ = ["DATASETS", "FILE_SUFFIXES", "DataError", "Dataset", "Split", "load_dataset"]

DATASETS: dict[str, Callable[[], RawData]] = {
    "diamonds": load_diamonds,
    "digits": load_digits,
    "mnist": load_mnist,
}
"""Built-in datasets by name; each loader returns raw arrays before splitting."""

FILE_SUFFIXES: tuple[str, ...] = tuple(sorted(READERS))
"""Accepted user-file suffixes."""


def _read_source(source: str | os.PathLike[str], label_column: str) -> tuple[str, RawData]:
    """Resolve ``source`` to a dataset name and its raw arrays."""
    if isinstance(source, str) and source in DATASETS:
        return source, DATASETS[source]()
    path = Path(source)
    reader = READERS.get(path.suffix.lower())
    if reader is None:
        raise DataError(
            f"unknown data source {str(source)!r}; expected a built-in dataset "
            f"({', '.join(sorted(DATASETS))}) or a path to a file ending in "
            f"{', '.join(FILE_SUFFIXES)}"
        )
    if not path.exists():
        raise DataError(f"data file {str(path)!r} does not exist")
    if not path.is_file():
        raise DataError(f"data file {str(path)!r} is not a regular file")
    return path.stem, reader(path, label_column)


def load_dataset(
    source: str | os.PathLike[str],
    *,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    seed: int = 0,
    label_column: str = "label",
    train_limit: int | None = None,
) -> Dataset:
    """Load a built-in dataset or a user file and split it into train, val and test.

    With an official test set (MNIST's 10,000 images, or ``x_test``/``y_test`` in an
    ``.npz``) that set is the test split and ``test_fraction`` is ignored; otherwise
    ``test_fraction`` of the examples are held out for test. ``val_fraction`` of the
    remaining training pool (as a fraction of the whole pool) becomes validation. Which
    examples go where depends only on ``seed``.

    Images are ``(N, C, H, W)``: MNIST is ``(x / 255 - 0.1307) / 0.3081``; digits and
    user images are standardized per channel with the training split's statistics.
    Tables are ``(N, D)``, standardized per column with the training split's statistics.

    Args:
        source: Built-in name (``"mnist"``, ``"digits"``, ``"diamonds"``) or path to a ``.npz``,
            ``.parquet`` or ``.csv`` file.
        val_fraction: Fraction of the training pool held out for validation, in [0, 0.9].
        test_fraction: Fraction held out for test when the source has no test set, in
            [0, 0.9].
        seed: Non-negative seed of the shuffle that decides the splits.
        label_column: Label column of ``.parquet``/``.csv`` files; labels must be
            integers ``0..C-1``.
        train_limit: Keep only the first N examples of the shuffled training split (for
            fast runs); None keeps all. Statistics for standardization come from the
            kept examples.

    Returns:
        The dataset, with ``num_classes = max(label) + 1`` over all splits.

    Raises:
        DataError: For an unknown source, a missing or unreadable file, bad labels or
            features, out-of-range arguments, or a split that would be empty.
    """
    val = check_fraction("val_fraction", val_fraction)
    test = check_fraction("test_fraction", test_fraction)
    seed = check_seed(seed)
    limit = check_train_limit(train_limit)
    if not isinstance(label_column, str) or not label_column:
        raise DataError(f"label_column={label_column!r} is invalid; expected a column name")
    name, raw = _read_source(source, label_column)
    return build_dataset(
        name, raw, val_fraction=val, test_fraction=test, seed=seed, train_limit=limit
    )
