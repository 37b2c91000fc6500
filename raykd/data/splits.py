"""Data types and the pure functions that turn raw arrays into a :class:`Dataset`.

Nothing here reads files or imports heavy libraries: the loaders in
:mod:`raykd.data.builtin` and :mod:`raykd.data.files` produce a :class:`RawData`,
and :func:`build_dataset` validates it (with :mod:`raykd.data.checks`), splits it by
seed and standardizes it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from raykd.data.arrays import ArrayPrep
from raykd.data.checks import MAX_NUM_CLASSES, DataError, check_features, check_labels

if TYPE_CHECKING:
    from raykd.data.images import ImagePrep
    from raykd.data.span_data import SpanPrep
    from raykd.data.table_prep import TablePrep
    from raykd.data.text import TextPrep

X_DTYPES = (np.dtype(np.float32), np.dtype(np.uint8), np.dtype(np.int64))
"""The dtypes of ``Split.x``: float32 inputs (images, tables), uint8 raw text bytes, int64
span windows (:mod:`raykd.data.span_data`)."""
FINGERPRINT_CHARS = 16
"""Number of hex characters of the sha256 digest kept as a split's fingerprint."""


def fingerprint(x: np.ndarray, y: np.ndarray) -> str:
    """Content fingerprint of a split.

    Args:
        x: Features, any shape and dtype.
        y: Labels, any shape and dtype.

    Returns:
        The first :data:`FINGERPRINT_CHARS` hex characters of sha256 over the shapes and
        dtypes of ``x`` and ``y`` followed by their C-order bytes.
    """
    digest = hashlib.sha256()
    header = f"x:{x.dtype.str}:{x.shape};y:{y.dtype.str}:{y.shape};"
    digest.update(header.encode("ascii"))
    digest.update(np.ascontiguousarray(x).data)
    digest.update(np.ascontiguousarray(y).data)
    return digest.hexdigest()[:FINGERPRINT_CHARS]


@dataclass(frozen=True, eq=False)
class Split:
    """One split of a dataset: features, labels and their content fingerprint.

    Equality and hashing are by identity (arrays have no single truth value); compare
    fingerprints to compare contents. Treat the arrays as read-only.

    Attributes:
        x: C-contiguous; ``float32`` ``(N, C, H, W)`` for images and ``(N, D)`` for tables, or
            ``uint8`` ``(N, P, W)`` for text: each example's P texts as raw UTF-8 bytes, zero
            padded to W (:mod:`raykd.data.text`), or ``int64`` ``(N, 4, L)`` span windows
            (input_ids, attention_mask, token_type_ids, valid: :mod:`raykd.data.span_data`).
        y: ``int64`` labels of shape ``(N,)``, values in ``0..C-1``; for span windows
            ``(N, 2)`` start and end positions in ``0..L-1`` (0: no answer in the window).
        fingerprint: :func:`fingerprint` of ``x`` and ``y``.
    """

    x: np.ndarray
    y: np.ndarray
    fingerprint: str

    def __post_init__(self) -> None:
        if self.x.dtype not in X_DTYPES or not self.x.flags.c_contiguous:
            raise DataError(f"Split.x must be C-contiguous float32 (images, tables), uint8 "
                            f"(text bytes) or int64 (span windows); got {self.x.dtype}")
        if self.x.dtype == np.uint8 and self.x.ndim != 3:
            raise DataError(f"Split.x of text bytes must be (N, P, W); got shape {self.x.shape}")
        if self.x.dtype == np.int64 and (self.x.ndim != 3 or self.x.shape[1] != 4):
            raise DataError(f"Split.x of span windows must be (N, 4, L); got shape {self.x.shape}")
        spans = self.x.dtype == np.int64
        if self.y.dtype != np.int64 or (self.y.ndim != 1 and not spans) or (
                spans and (self.y.ndim != 2 or self.y.shape[1] != 2)):
            raise DataError(f"Split.y must be int64 (N,) (or (N, 2) for span windows); got "
                            f"{self.y.dtype} {self.y.shape}")
        if self.x.shape[0] != self.y.shape[0]:
            raise DataError(
                f"Split.x has {self.x.shape[0]} rows but Split.y has {self.y.shape[0]}"
            )

    @classmethod
    def from_arrays(cls, x: np.ndarray, y: np.ndarray) -> Split:
        """Build a split, converting dtypes and computing the fingerprint.

        Args:
            x: Features; ``uint8`` text bytes and ``int64`` span windows are kept as they
                are, anything else is converted to ``float32``; C-contiguous either way.
            y: Labels; converted to ``int64``.

        Returns:
            The split.
        """
        x = np.asarray(x)
        kept = x.dtype in (np.dtype(np.uint8), np.dtype(np.int64))
        x = np.ascontiguousarray(x, dtype=x.dtype if kept else np.float32)
        y = np.ascontiguousarray(y, dtype=np.int64)
        return cls(x=x, y=y, fingerprint=fingerprint(x, y))

    def __len__(self) -> int:
        return int(self.y.shape[0])


@dataclass(frozen=True)
class Dataset:
    """A dataset split into train, validation and test.

    Attributes:
        name: Built-in name (``"mnist"``) or the stem of the user file.
        train: Training split (standardization statistics come from it).
        val: Validation split.
        test: Test split.
        num_classes: ``max(y) + 1`` over all examples (``train_limit`` does not
            change it); for span windows the window length L (positions).
        input_shape: Per-example shape, e.g. ``(1, 28, 28)``, ``(D,)`` or, for text, ``(P, W)``.
        is_image: Whether examples are ``(C, H, W)`` images.
        class_names: Class ``i``'s name at index ``i``; None when the classes are only
            numbers (an ``.npz``, digits, MNIST).
        table: The fitted preprocessing of a ``.csv``/``.parquet`` table
            (:class:`raykd.data.table_prep.TablePrep`); None for other sources.
        image: The fitted preprocessing of an image folder
            (:class:`raykd.data.images.ImagePrep`); None for other sources.
        text: How a text source became bytes (:class:`raykd.data.text.TextPrep`: columns, byte
            width, texts truncated); None for other sources.
        spans: Span extraction data (:class:`raykd.data.span_data.SpanPrep`): the tokenizer,
            window sizes and, per split, the questions and what maps windows back to them
            (evaluation on the driver); None for other sources.
        arrays: The scaling of the arrays as split (:class:`raykd.data.arrays.ArrayPrep`):
            the preprocessing of an ``.npz`` or a built-in dataset (a table's or image
            folder's inputs are already scaled by ``table`` or ``image``).
    """

    name: str
    train: Split
    val: Split
    test: Split
    num_classes: int
    input_shape: tuple[int, ...]
    is_image: bool
    class_names: tuple[str, ...] | None = None
    table: TablePrep | None = None
    image: ImagePrep | None = None
    arrays: ArrayPrep | None = None
    text: TextPrep | None = None
    spans: SpanPrep | None = None

    @property
    def fitted(self) -> TablePrep | ImagePrep | TextPrep | SpanPrep | ArrayPrep | None:
        """The preprocessing that turns the source's raw rows into inputs: the table's, the
        image folder's, the text's, the span windows', else the arrays' (None only for a
        Dataset built by hand)."""
        return self.table or self.image or self.text or self.spans or self.arrays

    @property
    def prep_record(self) -> dict[str, Any] | None:
        """The JSON record of :attr:`fitted`, if any."""
        fitted = self.fitted
        return None if fitted is None else fitted.to_dict()


class Preprocessing(NamedTuple):
    """How raw features become model inputs: ``((x / divisor) - mean) / std``.

    Attributes:
        divisor: Raw values are divided by this first (255 for 8-bit pixels).
        mean: Fixed mean, or None to use the training split's mean (per channel for
            images, per column for tables).
        std: Fixed standard deviation, or None to use the training split's.
    """

    divisor: float = 1.0
    mean: float | None = None
    std: float | None = None


class RawData(NamedTuple):
    """What a loader returns: arrays before splitting and standardization.

    Attributes:
        x: Features, ``(N, D)``, ``(N, H, W)`` or ``(N, C, H, W)``, any numeric dtype.
        y: Labels ``(N,)``.
        x_test: Official test features, or None to carve a test split from ``x``.
        y_test: Official test labels, or None.
        where: How messages name the source, e.g. ``"'data.csv'"``.
        label_name: How messages name the labels, e.g. ``"column 'label'"``.
        preprocessing: Scaling and standardization to apply.
        class_names: Names of the classes ``0..C-1``, when they have names.
    """

    x: np.ndarray
    y: np.ndarray
    x_test: np.ndarray | None
    y_test: np.ndarray | None
    where: str
    label_name: str = "labels"
    preprocessing: Preprocessing = Preprocessing()
    class_names: tuple[str, ...] | None = None


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
