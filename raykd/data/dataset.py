"""What a job's data is: a :class:`Dataset` of three :class:`Split` s (features, labels and
their content fingerprint), and what a loader hands over before splitting
(:class:`RawData`, with its :class:`Preprocessing`). Splitting and standardizing is
:mod:`raykd.data.splits`."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from raykd.data.arrays import ArrayPrep
from raykd.data.checks import DataError
from raykd.data.image_prep import ImagePrep
from raykd.data.span_prep import SpanPrep
from raykd.data.table_prep import TablePrep
from raykd.data.text_prep import TextPrep

__all__ = ["FINGERPRINT_CHARS", "X_DTYPES", "Dataset", "Preprocessing", "RawData", "Split",
           "fingerprint"]

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
            (:class:`raykd.data.image_prep.ImagePrep`); None for other sources.
        text: How a text source became bytes (:class:`raykd.data.text_prep.TextPrep`: columns, byte
            width, texts truncated); None for other sources.
        spans: Span extraction data (:class:`raykd.data.span_prep.SpanPrep`): the tokenizer,
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
