"""Span extraction (SQuAD) data as a job's :class:`~raykd.data.dataset.Dataset`.

A span source is the built-in ``bbc-speakers`` (:mod:`raykd.data.bbc_speakers`, split by
article), a SQuAD v1.1/v2.0 ``.json`` file, or a ``.jsonl``/``.parquet`` file of
question/context/answers rows given without ``text_column`` (:mod:`raykd.data.squad`).
Questions are split by seed (``split_indices``; ``train_limit`` keeps the first N training
questions), then every split is cut into windows with ONE tokenizer, shared by every model
of the job (:func:`raykd.data.windows.make_windows`):

- ``Split.x``: int64 ``(N_win, 4, L)`` = [input_ids, attention_mask, token_type_ids, valid]
  (valid = 1 at the context tokens and position 0, "no answer");
- ``Split.y``: int64 ``(N_win, 2)`` gold start/end positions (0 = no answer in the window);
- ``Dataset.spans`` (:class:`~raykd.data.span_prep.SpanPrep`): per split the questions and
  the windows' offsets and question index, which the driver needs to score answers (SQuAD
  EM/F1).

``num_classes`` is L (the positions) and ``input_shape`` ``(4, L)``. A split's fingerprint
covers x and y, so the tokenizer's ids and the window sizes are in every cache key.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from raykd.data.bbc_speakers import build_bbc_speakers
from raykd.data.checks import DataError
from raykd.data.dataset import Dataset, Split
from raykd.data.paths import open_data
from raykd.data.span_prep import SpanPrep, SpanSplit
from raykd.data.splits import split_indices
from raykd.data.squad import SquadExample, read_squad
from raykd.data.tokenizers import load_tokenizer, tokenizer_sha256
from raykd.data.windows import Windows, make_windows

SPAN_DATASETS = ("bbc-speakers",)
"""Built-in span datasets."""
SPAN_COLUMNS = ("question", "context", "answers")
"""The columns that make a ``.parquet`` file span data (without ``text_column``)."""
SPLITS = ("train", "val", "test")


def is_span_source(source: str | os.PathLike[str], text_column: str | None) -> bool:
    """Whether ``source`` is span data: ``bbc-speakers``, a ``.json`` file, or (without
    ``text_column``) a ``.jsonl`` file or a ``.parquet`` file with question, context and
    answers columns."""
    if isinstance(source, str) and source in SPAN_DATASETS:
        return True
    path = Path(source)
    suffix = path.suffix.lower()
    if suffix == ".json":
        return True
    if text_column is not None or not path.is_file():
        return False
    if suffix == ".jsonl":
        return _jsonl_has_span_columns(path)
    return suffix == ".parquet" and _parquet_has_span_columns(path)


def _jsonl_has_span_columns(path: Path) -> bool:
    """Whether the first row of a ``.jsonl`` file is a SQuAD row (question/context/answers);
    else the file is text data needing ``data.text_column`` (the text reader says so)."""
    import json

    with open_data(path) as handle:
        for line in handle:
            if line.strip():
                try:
                    row = json.loads(line)
                except (ValueError, RecursionError):
                    return False
                return isinstance(row, dict) and set(SPAN_COLUMNS) <= set(row)
    return False


def _parquet_has_span_columns(path: Path) -> bool:
    import pyarrow.parquet as pq

    try:
        with open_data(path) as handle:
            names = set(pq.read_schema(handle).names)
    except DataError:
        raise
    except Exception:  # not Parquet: the table reader says why
        return False
    return set(SPAN_COLUMNS) <= names


def _questions(source: str | os.PathLike[str], *, val_fraction: float, test_fraction: float,
               seed: int) -> dict[str, list[SquadExample]]:
    """The questions of each split: bbc-speakers' own split by article, else by passage."""
    if isinstance(source, str) and source in SPAN_DATASETS:
        built = build_bbc_speakers(seed=seed, val_fraction=val_fraction,
                                   test_fraction=test_fraction)
        return {s: [built.examples[i] for i in np.flatnonzero(built.split == s)] for s in SPLITS}
    examples = read_squad(source)
    # split by passage: the questions of one context stay in one split (a passage in train and
    # test would score the test questions on text the model was trained on)
    groups: dict[str, list[int]] = {}
    for i, ex in enumerate(examples):
        groups.setdefault(ex.context, []).append(i)
    members = list(groups.values())
    train, val, test = split_indices(len(members), carve_test=True, val_fraction=val_fraction,
                                     test_fraction=test_fraction, seed=seed,
                                     where=f"{str(source)!r} ({len(members)} passages)")
    assert test is not None
    return {s: [examples[i] for g in sorted(int(j) for j in part) for i in members[g]]
            for s, part in (("train", train), ("val", val), ("test", test))}


def window_inputs(windows: Windows) -> np.ndarray:
    """int64 (N, 4, L): the windows' three token rows plus the valid mask as row 3."""
    valid = windows.valid[:, None, :].astype(np.int64)
    return np.ascontiguousarray(np.concatenate([windows.x, valid], axis=1))


def load_span_dataset(source: str | os.PathLike[str], *, tokenizer: str | None,
                      max_length: int = 384, doc_stride: int = 128, max_query_length: int = 64,
                      val_fraction: float = 0.1, test_fraction: float = 0.2, seed: int = 0,
                      train_limit: int | None = None) -> Dataset:
    """Span data split by passage (the questions of one context together; bbc-speakers: by
    article), windowed with ``tokenizer`` (module docstring); ``train_limit`` keeps N training
    questions drawn by ``seed``."""
    if tokenizer is None:
        raise DataError(f"span data {str(source)!r} is cut into windows by the student's "
                        "tokenizer: give student.model.tokenizer or student.model.path (name: hf)")
    questions = _questions(source, val_fraction=val_fraction, test_fraction=test_fraction,
                           seed=seed)
    if train_limit is not None:  # N training questions drawn by the seed, not the first N
        keep = np.sort(np.random.default_rng([seed, 1]).permutation(len(questions["train"]))
                       [:train_limit])
        questions["train"] = [questions["train"][int(i)] for i in keep]
    tok = load_tokenizer(tokenizer)
    parts: dict[str, SpanSplit] = {}
    splits: dict[str, Split] = {}
    for name in SPLITS:
        examples = questions[name]
        if not examples:
            raise DataError(f"the {name} split of {str(source)!r} has no questions; "
                            "use more data or other fractions")
        windows = make_windows(examples, tok, max_length=max_length, doc_stride=doc_stride,
                               max_query_length=max_query_length)
        parts[name] = SpanSplit(tuple(examples), windows)
        splits[name] = Split.from_arrays(window_inputs(windows), windows.y)
    prep = SpanPrep(source=str(source), tokenizer=str(tokenizer),
                    tokenizer_sha256=tokenizer_sha256({"tokenizer": tokenizer}),
                    max_length=max_length, doc_stride=doc_stride,
                    max_query_length=max_query_length, parts=parts)
    name = str(source) if isinstance(source, str) and source in SPAN_DATASETS else Path(source).stem
    return Dataset(name=name, train=splits["train"], val=splits["val"], test=splits["test"],
                   num_classes=max_length, input_shape=prep.input_shape, is_image=False,
                   spans=prep)


def window_accuracy(logits: np.ndarray, x: np.ndarray, y: np.ndarray) -> float:
    """The share of windows whose start AND end arg-max, over the valid positions
    (``x[:, 3]``), equal the gold ``y`` (N, 2); NaN for no windows."""
    if not len(y):
        return float("nan")
    valid = np.asarray(x[:, 3], dtype=bool)[:, None, :]
    top = np.where(valid, np.asarray(logits, dtype=np.float32), -np.inf).argmax(-1)
    return float((top == y).all(axis=1).mean())
