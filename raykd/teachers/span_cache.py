"""Span logits stored unpadded: start/end logits of the valid positions only, in float16.

A window of L tokens has ``valid`` positions (position 0, "no answer", plus its context
tokens; :class:`raykd.data.windows.Windows`). A teacher's span logits (N, 2, L) are kept
as the (K, 2) float16 values of the valid positions in row order, K = sum of the rows'
valid counts, with ``row_offsets`` (N + 1,) int64 (row i is ``values[row_offsets[i] :
row_offsets[i + 1]]``) and each row's first context position ``context_start`` (N,) int32.
So a window costs ``2 * valid * 2`` bytes (+ 12 bytes of index) instead of ``2 * L * 4``.

The valid positions of a row must be ``{0} U [context_start, context_start + count - 1)``:
the CLS position and one contiguous run of context tokens, which is what question-first
windows give. :func:`pack` checks it.

Entries are ``.npz`` files of plain arrays, read with ``allow_pickle=False``. This module's
own code needs numpy only (importing it loads the ``raykd.teachers`` package, with Ray).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from raykd.core.jobdir import atomic_path

FILL = -1.0e4
"""The logit :meth:`PackedSpans.unpack` puts at invalid positions: finite in float16 and
float32 (no NaN if a mask is forgotten), and ``exp(FILL - max)`` is 0 in both."""
ARRAYS = ("values", "row_offsets", "context_start", "length")
"""The arrays of a stored entry."""


@dataclass(frozen=True, eq=False)
class PackedSpans:
    """One teacher's span logits over N windows of L tokens, valid positions only.

    Attributes:
        values: float16 (K, 2): start and end logits of the valid positions, row by row.
        row_offsets: int64 (N + 1,): row i's values are ``values[row_offsets[i]:row_offsets[i+1]]``.
        context_start: int32 (N,): the first context position of each row.
        length: L, tokens per window.
    """

    values: np.ndarray
    row_offsets: np.ndarray
    context_start: np.ndarray
    length: int

    def __len__(self) -> int:
        return int(self.row_offsets.shape[0] - 1)

    @property
    def nbytes(self) -> int:
        """Bytes of the stored arrays."""
        return int(self.values.nbytes + self.row_offsets.nbytes + self.context_start.nbytes)

    def unpack(self, rows: np.ndarray | list[int]) -> tuple[np.ndarray, np.ndarray]:
        """The padded logits of ``rows``: float32 (B, 2, L) with :data:`FILL` at invalid
        positions, and the valid mask bool (B, L)."""
        rows = np.asarray(rows, dtype=np.int64)
        logits = np.full((rows.size, 2, self.length), FILL, dtype=np.float32)
        mask = np.zeros((rows.size, self.length), dtype=bool)
        for b, row in enumerate(rows):
            lo, hi = self.row_offsets[row], self.row_offsets[row + 1]
            start = int(self.context_start[row])
            positions = np.r_[0, start:start + int(hi - lo) - 1]
            logits[b][:, positions] = self.values[lo:hi].T
            mask[b, positions] = True
        return logits, mask

    def arrays(self) -> dict[str, np.ndarray]:
        """The entry as named plain arrays (:data:`ARRAYS`), e.g. for an ``.npz``."""
        return {"values": self.values, "row_offsets": self.row_offsets,
                "context_start": self.context_start, "length": np.int64(self.length)}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> PackedSpans:
        """The inverse of :meth:`arrays`; ValueError when the arrays do not fit together."""
        values = np.asarray(arrays["values"])
        offsets = np.asarray(arrays["row_offsets"])
        start = np.asarray(arrays["context_start"])
        length = int(arrays["length"])
        ok = (values.dtype == np.float16 and values.ndim == 2 and values.shape[1] == 2
              and offsets.dtype == np.int64 and offsets.ndim == 1 and offsets.size >= 1
              and start.dtype == np.int32 and start.shape == (offsets.size - 1,)
              and offsets[0] == 0 and offsets[-1] == values.shape[0]
              and bool(np.all(np.diff(offsets) >= 1))
              and bool(np.all(start >= 1))
              and bool(np.all(start.astype(np.int64) + np.diff(offsets) - 1 <= length)))
        if not ok:
            raise ValueError("span logits entry is inconsistent: expected float16 values (K, 2), "
                             "int64 row_offsets (N+1,) from 0 to K, int32 context_start (N,)")
        return cls(values, offsets, start, length)


def pack(logits: np.ndarray, valid: np.ndarray) -> PackedSpans:
    """Keep the valid positions of span logits (module docstring).

    Args:
        logits: (N, 2, L) start/end logits, any float dtype; stored as float16.
        valid: bool (N, L), position 0 and one contiguous run of context positions True.

    Raises:
        ValueError: on shapes that disagree, or a row whose valid positions are not
            position 0 plus one contiguous run.
    """
    logits, valid = np.asarray(logits), np.asarray(valid, dtype=bool)
    if logits.ndim != 3 or logits.shape[1] != 2 or valid.shape != (logits.shape[0],
                                                                   logits.shape[2]):
        raise ValueError(f"logits {logits.shape} and valid {valid.shape} must be (N, 2, L) "
                         "and (N, L)")
    counts = valid.sum(axis=1)
    rest = valid[:, 1:]
    start = np.where(rest.any(axis=1), rest.argmax(axis=1) + 1, 1).astype(np.int32)
    expected = np.zeros_like(valid)
    expected[:, 0] = True
    columns = np.arange(valid.shape[1])[None, :]
    expected |= (columns >= start[:, None]) & (columns < start[:, None] + counts[:, None] - 1)
    if not (valid[:, 0].all() and np.array_equal(expected, valid)):
        bad = int(np.flatnonzero((expected != valid).any(axis=1) | ~valid[:, 0])[0])
        raise ValueError(f"row {bad}'s valid positions are not position 0 plus one contiguous "
                         "run of context positions")
    offsets = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    values = np.ascontiguousarray(logits.transpose(0, 2, 1)[valid]).astype(np.float16)
    return PackedSpans(values, offsets, start, int(valid.shape[1]))


def save_packed(path: str | os.PathLike[str], packed: PackedSpans) -> None:
    """Write ``packed`` as an ``.npz`` of plain arrays (atomically: temp file, then rename)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **packed.arrays())


def load_packed(path: str | os.PathLike[str]) -> PackedSpans:
    """Read an entry written by :func:`save_packed` (no pickle; ValueError if inconsistent)."""
    with np.load(path, allow_pickle=False) as z:
        return PackedSpans.from_arrays({name: z[name] for name in ARRAYS})
