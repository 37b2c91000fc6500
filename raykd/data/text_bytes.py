"""Texts as raw UTF-8 bytes: the one encoding of text data in raykd.

A text dataset's ``Split.x`` is a C-contiguous ``uint8`` array ``(N, P, W)``: ``P = 1`` (one
text per example) or ``2`` (a pair), each text's UTF-8 bytes zero padded to the byte width
``W``. NUL characters are removed from a text before it is encoded, so the first zero byte of
a row ends its text. A text longer than ``W`` bytes is cut at the last whole character that
fits (never inside a multi-byte UTF-8 sequence). Every ``name: hf`` model decodes the rows with
:func:`decode_row` and tokenizes the text itself, so teachers and students may use different
tokenizers on the same arrays.

This module imports numpy only.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

MAX_PAIR = 2
"""At most two texts per example (a text and its pair)."""


def _utf8(text: str, width: int | None) -> bytes:
    """``text`` without NULs as UTF-8, cut to at most ``width`` bytes at a character boundary."""
    data = text.replace("\x00", "").encode("utf-8", errors="replace")
    if width is None or len(data) <= width:
        return data
    cut = width
    while cut > 0 and data[cut] & 0xC0 == 0x80:  # a continuation byte: back to the lead byte
        cut -= 1
    return data[:cut]


def encode_texts(rows: Sequence[str] | Sequence[tuple[str, str]] | Sequence[Sequence[str]],
                 width: int | None = None) -> np.ndarray:
    """Texts (or pairs of texts) as a ``uint8`` array ``(N, P, W)`` of zero-padded UTF-8 bytes.

    Args:
        rows: ``N`` strings (``P = 1``) or ``N`` pairs ``(text, text_pair)`` (``P = 2``); all
            rows alike.
        width: ``W``, bytes per text; longer texts are cut at a character boundary. None: the
            longest text's length (at least 1).

    Raises:
        ValueError: On rows of mixed kinds, more than two texts in a row, or ``width < 1``.
    """
    if width is not None and width < 1:
        raise ValueError(f"width must be >= 1, got {width}")
    texts = [[r] if isinstance(r, str) else list(r) for r in rows]
    counts = sorted({len(t) for t in texts})
    if len(counts) > 1 or (counts and not 1 <= counts[0] <= MAX_PAIR):
        raise ValueError(f"rows must all be strings or all pairs of strings; got rows of "
                         f"{counts} texts")
    if not all(isinstance(s, str) for t in texts for s in t):
        raise ValueError("rows must hold str texts")
    encoded = [[_utf8(s, width) for s in t] for t in texts]
    p = counts[0] if counts else 1
    w = width if width is not None else max([1, *(len(b) for t in encoded for b in t)])
    out = np.zeros((len(encoded), p, w), dtype=np.uint8)
    for i, row in enumerate(encoded):
        for j, data in enumerate(row):
            out[i, j, : len(data)] = np.frombuffer(data, dtype=np.uint8)
    return out


def decode_row(row: np.ndarray) -> list[str]:
    """The ``P`` texts of one example ``(P, W)``: each row's bytes up to its trailing zeros,
    decoded as UTF-8 (undecodable bytes dropped)."""
    data = np.ascontiguousarray(row, dtype=np.uint8).reshape(row.shape[0], -1)
    return [bytes(r).rstrip(b"\x00").decode("utf-8", errors="ignore") for r in data]


def decode_batch(batch: np.ndarray) -> list[list[str]]:
    """:func:`decode_row` of every example of ``(B, P, W)``."""
    return [decode_row(row) for row in batch]
