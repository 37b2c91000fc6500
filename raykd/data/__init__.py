"""Datasets for distillation jobs: built-ins and user files, split and fingerprinted.

Example:
    >>> from raykd.data import load_dataset
    >>> data = load_dataset("digits", seed=0)
    >>> data.train.x.shape[1:], data.num_classes
    ((1, 8, 8), 10)

``source`` is a built-in name (see :data:`DATASETS`), an image folder
``root/<class name>/*.png|jpg|jpeg`` (rules: :mod:`raykd.data.images`) or a path to a ``.npz``
(arrays ``x``, ``y``, optionally ``x_test``, ``y_test``), ``.parquet`` or ``.csv`` file
(text or integer labels in ``label_column``; numeric and categorical feature columns
chosen, encoded and scaled as :mod:`raykd.data.table_columns` and
:mod:`raykd.data.table_prep` state, fitted on the training split); a ``.parquet`` file
with ``image_column`` is a column of encoded images (:mod:`raykd.data.image_parquet`).
Text classification data (the built-in ``bbc-news``, or a ``.csv``, ``.parquet`` or
``.jsonl`` file with ``text_column``) is raw UTF-8 bytes ``(N, P, W)`` uint8
(:mod:`raykd.data.text`, :mod:`raykd.data.text_files`). Splits are
deterministic in ``seed``; every bad input raises :class:`DataError` with a one-line
message. Every source records how its raw rows become inputs (``Dataset.fitted``): a
table's :class:`TablePrep`, an image dataset's :class:`ImagePrep`, a text dataset's
:class:`TextPrep`, or, for an ``.npz`` and the other built-ins, the scaling :class:`ArrayPrep`;
:func:`raw_test_rows` gives the raw test rows.

This package imports only numpy at import time; pandas, pyarrow, zarr, Pillow and
scikit-learn are imported by the loaders that need them.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from raykd.data.arrays import ArrayPrep
from raykd.data.builtin import load_diamonds, load_digits, load_mnist
from raykd.data.checks import DataError, check_fraction, check_seed, check_train_limit
from raykd.data.dataset import Dataset, RawData, Split
from raykd.data.files import READERS
from raykd.data.image_parquet import load_image_parquet
from raykd.data.image_prep import ImagePrep
from raykd.data.images import load_image_folder
from raykd.data.span_data import SPAN_DATASETS, is_span_source, load_span_dataset
from raykd.data.splits import build_dataset, raw_test_split
from raykd.data.table_columns import ColumnChoice
from raykd.data.table_prep import TablePrep
from raykd.data.tables import TABLE_SUFFIXES, load_table
from raykd.data.text import TextRaw, build_text_dataset, load_bbc_news, test_texts
from raykd.data.text_files import TEXT_SUFFIXES, load_text_file
from raykd.data.text_prep import TextPrep

__all__ = [
    "DATASETS", "FILE_SUFFIXES", "TEXT_DATASETS", "ArrayPrep", "ColumnChoice", "DataError",
    "Dataset", "ImagePrep", "Split", "TablePrep", "TextPrep",
    "load_dataset", "raw_test_rows",
]

DATASETS: dict[str, Callable[[], RawData]] = {
    "diamonds": load_diamonds,
    "digits": load_digits,
    "mnist": load_mnist,
}
"""Built-in datasets by name; each loader returns raw arrays before splitting."""

TEXT_DATASETS: dict[str, Callable[[], TextRaw]] = {
    "bbc-news": load_bbc_news,
}
"""Built-in text datasets by name (columns ``text`` and ``label``); each loader returns the
texts before encoding (:mod:`raykd.data.text`)."""

FILE_SUFFIXES: tuple[str, ...] = tuple(sorted({*READERS, *TABLE_SUFFIXES, *TEXT_SUFFIXES}))
"""Accepted user-file suffixes (``.jsonl``: text data only)."""
TEXT_ONLY_SUFFIXES = tuple(s for s in TEXT_SUFFIXES if s not in TABLE_SUFFIXES)


def _source_path(source: str | os.PathLike[str]) -> Path | None:
    """The file ``source`` names, checked; None for a built-in dataset."""
    if isinstance(source, str) and (source in DATASETS or source in TEXT_DATASETS
                                    or source in SPAN_DATASETS):
        return None
    path = Path(source)
    if path.is_dir() and path.suffix.lower() not in FILE_SUFFIXES:  # data.npz/ is no image folder
        return path
    if path.suffix.lower() not in FILE_SUFFIXES:
        raise DataError(
            f"unknown data source {str(source)!r}; expected a built-in dataset "
            f"({', '.join(sorted({*DATASETS, *TEXT_DATASETS, *SPAN_DATASETS}))}), an image folder, "
            "a SQuAD .json file, or a path to a "
            "file ending in "
            f"{', '.join(FILE_SUFFIXES)}"
        )
    if not path.exists():
        raise DataError(f"data file {str(path)!r} does not exist")
    if not path.is_file():
        raise DataError(f"data file {str(path)!r} is not a regular file")
    return path


def _image_parquet(path: Path | None, source: object, *, image_column: str,
                   features: ColumnChoice | None, **options: Any) -> Dataset:
    """A ``.parquet`` file's column of encoded images as a dataset (checked arguments)."""
    if path is None or path.is_dir() or path.suffix.lower() != ".parquet":
        raise DataError(f"data.image_column applies to .parquet files only; {str(source)!r} is not "
                        "one: remove data.image_column")
    if features is not None and features != ColumnChoice():
        raise DataError(f"data.features applies to tables; {str(source)!r} with data.image_column "
                        "is an image dataset: remove data.features")
    return load_image_parquet(path, image_column=image_column, **options)


def load_dataset(
    source: str | os.PathLike[str],
    *,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    seed: int = 0,
    label_column: str = "label",
    train_limit: int | None = None,
    features: ColumnChoice | None = None,
    image_size: tuple[int, int] | None = None,
    image_column: str | None = None,
    text_column: str | None = None,
    text_pair_column: str | None = None,
    tokenizer: str | None = None,
    max_length: int = 384,
    doc_stride: int = 128,
    max_query_length: int = 64,
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
        label_column: Label column of ``.parquet``/``.csv`` files: text, integers or
            booleans (see :mod:`raykd.data.table_columns`).
        train_limit: Keep only the first N examples of the shuffled training split (for
            fast runs); None keeps all. Statistics for standardization come from the
            kept examples.
        features: Which columns of a ``.parquet``/``.csv`` file are features and how
            categories are capped; None: every usable column (the index-like ones
            dropped, see :mod:`raykd.data.table_columns`). Only tables take it.
        image_size: ``(height, width)`` every image of an image folder (or image column)
            is resized to; None: the first image's size. Only images take it.
        image_column: The column of encoded images (PNG/JPEG bytes) of a ``.parquet``
            file: the file is then an image dataset labelled by ``label_column``.
        text_column: The column of raw text of a ``.csv``, ``.parquet`` or ``.jsonl`` file:
            the file is then a text dataset labelled by ``label_column``
            (:mod:`raykd.data.text_files`). ``bbc-news`` is text already (its columns are
            ``text`` and ``label``).
        text_pair_column: With ``text_column``, a second text column: each example is then a
            pair of texts, ``input_shape`` ``(2, W)``.
        tokenizer: Span data only (``bbc-speakers``, a SQuAD ``.json``, or a ``.jsonl``/
            ``.parquet`` of question/context/answers without ``text_column``): the tokenizer
            (a folder or ``package:<module>/<dir>``) that cuts it into windows
            (:mod:`raykd.data.span_data`).
        max_length, doc_stride, max_query_length: Span data only: tokens per window, tokens
            of overlap, tokens kept of a question.

    Returns:
        The dataset, with ``num_classes = max(label) + 1`` over all splits (for tables
        and text: the number of distinct labels), ``class_names`` when the classes have
        names and, for tables, ``table`` (for image folders, ``image``): the preprocessing
        fitted on the training split; for text, ``text``: the columns and byte width.

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
    if is_span_source(source, text_column):
        return load_span_dataset(source, tokenizer=tokenizer, max_length=max_length,
                                 doc_stride=doc_stride, max_query_length=max_query_length,
                                 val_fraction=val, test_fraction=test, seed=seed,
                                 train_limit=limit)
    windowing = {"max_length": (max_length, 384), "doc_stride": (doc_stride, 128),
                 "max_query_length": (max_query_length, 64)}
    for option, (given, default) in windowing.items():
        if given != default:
            raise DataError(f"data.{option} applies to span data only (bbc-speakers, SQuAD .json, "
                            f".jsonl/.parquet of question/context/answers); {str(source)!r} is not "
                            f"span data: remove data.{option}")
    path = _source_path(source)
    if _is_text(path, source, text_column, text_pair_column):
        name, raw = _text_raw(path, source, text_column=text_column,
                              text_pair_column=text_pair_column, label_column=label_column,
                              features=features, image_size=image_size, image_column=image_column)
        return build_text_dataset(name, raw, val_fraction=val, test_fraction=test, seed=seed,
                                  train_limit=limit)
    if image_column is not None:
        return _image_parquet(path, source, image_column=image_column, label_column=label_column,
                              features=features, image_size=image_size, val_fraction=val,
                              test_fraction=test, seed=seed, train_limit=limit)
    if path is not None and path.is_dir():
        if features is not None and features != ColumnChoice():
            raise DataError(f"data.features applies to .csv/.parquet tables only; {str(source)!r} "
                            "is an image folder: remove data.features")
        return load_image_folder(path, image_size=image_size, val_fraction=val,
                                 test_fraction=test, seed=seed, train_limit=limit)
    if image_size is not None:
        raise DataError(f"data.image_size applies to image folders and Parquet image columns only; "
                        f"{str(source)!r} is neither: remove data.image_size")
    if path is not None and path.suffix.lower() in TABLE_SUFFIXES:
        return load_table(path, label_column=label_column, choice=features or ColumnChoice(),
                          val_fraction=val, test_fraction=test, seed=seed, train_limit=limit)
    if features is not None and features != ColumnChoice():
        raise DataError(
            f"data.features applies to .csv/.parquet tables only; {str(source)!r} is not one: "
            "remove data.features"
        )
    name, raw = _raw_arrays(path, source, label_column)
    return build_dataset(
        name, raw, val_fraction=val, test_fraction=test, seed=seed, train_limit=limit
    )


def _is_text(path: Path | None, source: object, text_column: str | None,
             text_pair_column: str | None) -> bool:
    """Whether ``source`` is read as text data: a text column is named, or a built-in text
    dataset; DataError for a ``.jsonl`` file without a text column."""
    if text_column is not None or text_pair_column is not None:
        return True
    if path is not None and path.suffix.lower() in TEXT_ONLY_SUFFIXES:
        raise DataError(f"{str(path)!r} is a JSON Lines file, which raykd reads as text data "
                        "only: set data.text_column (and data.label_column) to its keys")
    return path is None and str(source) in TEXT_DATASETS


def _text_raw(path: Path | None, source: object, *, text_column: str | None,
              text_pair_column: str | None, label_column: str, features: ColumnChoice | None,
              image_size: tuple[int, int] | None, image_column: str | None) -> tuple[str, TextRaw]:
    """The name and texts of a built-in text dataset or a user text file, after checking that
    only text options are given."""
    shown = repr(str(source))
    if text_pair_column is not None and text_column is None:
        raise DataError("data.text_pair_column needs data.text_column (the first text of each "
                        "pair): set data.text_column too")
    for option, given in (("data.image_column", image_column is not None),
                          ("data.image_size", image_size is not None),
                          ("data.features", features is not None and features != ColumnChoice())):
        if given:
            raise DataError(f"{option} applies to images or tables; {shown} is read as text data: "
                            f"remove {option}")
    if path is None and str(source) in TEXT_DATASETS:
        if text_column not in (None, "text") or text_pair_column is not None \
                or label_column != "label":
            raise DataError(f"dataset {shown} has the columns 'text' and 'label' (no text pair); "
                            "set data.text_column to 'text' (or leave it out), data.label_column "
                            "to 'label', and remove data.text_pair_column")
        return str(source), TEXT_DATASETS[str(source)]()
    if path is None or path.is_dir() or path.suffix.lower() not in TEXT_SUFFIXES:
        raise DataError(f"data.text_column applies to {', '.join(TEXT_SUFFIXES)} files and the "
                        f"built-in text datasets ({', '.join(sorted(TEXT_DATASETS))}); {shown} is "
                        "neither: remove data.text_column")
    assert text_column is not None
    return path.stem, load_text_file(path, text_column=text_column,
                                     text_pair_column=text_pair_column, label_column=label_column)


def _raw_arrays(path: Path | None, source: object, label_column: str) -> tuple[str, RawData]:
    """The name and raw arrays of a built-in dataset (``path`` None) or an ``.npz``."""
    if path is None:
        return str(source), DATASETS[str(source)]()
    if path.is_dir() or path.suffix.lower() not in READERS:
        raise DataError(f"{str(source)!r} is not a built-in dataset or an .npz file")
    return path.stem, READERS[path.suffix.lower()](path, label_column)


def raw_test_rows(source: str | os.PathLike[str], *, val_fraction: float = 0.1,
                  test_fraction: float = 0.2, seed: int = 0, label_column: str = "label",
                  text_column: str | None = None, text_pair_column: str | None = None,
                  ) -> tuple[np.ndarray | list[str] | list[tuple[str, ...]], np.ndarray]:
    """The test rows of a built-in dataset, an ``.npz`` or a text source as the source holds
    them (before any scaling or byte encoding: what a user gives ``raykd predict``), and their
    labels (class numbers); the same rows as :func:`load_dataset`'s test split with the same
    arguments. Text: one ``str`` per row, or a ``(text, pair)`` tuple per row of a pair
    dataset (not truncated to the byte width). Tables and images: a DataError (their rows
    are the file itself)."""
    path = _source_path(source)
    val = check_fraction("val_fraction", val_fraction)
    test = check_fraction("test_fraction", test_fraction)
    if _is_text(path, source, text_column, text_pair_column):
        raw_text = _text_raw(path, source, text_column=text_column,
                             text_pair_column=text_pair_column, label_column=label_column,
                             features=None, image_size=None, image_column=None)[1]
        return test_texts(raw_text, val_fraction=val, test_fraction=test, seed=check_seed(seed))
    if path is not None and (path.is_dir() or path.suffix.lower() not in READERS):
        raise DataError(f"{str(source)!r} is a table or images: its raw test rows are the file's "
                        "own rows; raw_test_rows takes a built-in dataset, an .npz or text data")
    name, raw = _raw_arrays(path, source, label_column)
    del name
    return raw_test_split(raw, val_fraction=val, test_fraction=test, seed=check_seed(seed))
