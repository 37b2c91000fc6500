"""Top-k sparse teacher logits, for class counts where (M, N, C) floats do not fit.

Per example we keep the k largest logits ``v_1..v_k`` with their class indices, and
``r = logsumexp`` of the other ``C - k`` logits. Reconstruction fills every other class
with the same value ``u = r - log(C - k)``, which keeps the partition function:

    sum_j exp(z_j) = sum_i exp(v_i) + (C - k) * exp(u)        (exactly)

so the reconstructed softmax (at T = 1) gives the top-k classes exactly their true
probabilities and spreads the tail mass ``R = 1 - sum_i p_i`` evenly over the rest.
Bound: the total-variation distance between the true and the reconstructed distribution
is at most ``R`` (only tail classes move, and their total mass is unchanged); the arg-max
is preserved for k >= 1 (u is a log-mean-exp of the tail, so it is at most v_k), so WKD's
correctness test sees the same teacher decisions. At other temperatures the tail is
approximate in the same way; pick k so that the tail mass is small.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class TopK(NamedTuple):
    """Sparse logits of shape (..., C): values/indices (..., k) and the tail's logsumexp (...)."""

    values: np.ndarray
    indices: np.ndarray
    rest_lse: np.ndarray
    num_classes: int


def to_topk(logits: np.ndarray, k: int) -> TopK:
    """Keep the k largest logits per row and the logsumexp of the rest."""
    c = logits.shape[-1]
    if not 1 <= k < c:
        raise ValueError(f"cache.topk={k} must be in [1, {c - 1}] for {c} classes")
    idx = np.argpartition(-logits, k - 1, axis=-1)[..., :k]
    vals = np.take_along_axis(logits, idx, axis=-1)
    rest = logits.astype(np.float64, copy=True)
    np.put_along_axis(rest, idx, -np.inf, axis=-1)
    top = rest.max(-1, keepdims=True)
    lse = (top[..., 0] + np.log(np.exp(rest - top).sum(-1))).astype(np.float32)
    return TopK(vals.astype(np.float32), idx.astype(np.int32), lse, c)


def from_topk(sparse: TopK, rows: np.ndarray | slice = slice(None)) -> np.ndarray:
    """Dense (..., C) logits for ``rows`` of the last-but-one axis (a batch's indices)."""
    vals = sparse.values[..., rows, :]
    idx = sparse.indices[..., rows, :]
    lse = sparse.rest_lse[..., rows]
    k = vals.shape[-1]
    fill = (lse - np.log(sparse.num_classes - k)).astype(np.float32)
    dense = np.repeat(fill[..., None], sparse.num_classes, axis=-1)
    np.put_along_axis(dense, idx.astype(np.int64), vals, axis=-1)
    return dense


def dense(logits: np.ndarray | TopK) -> np.ndarray:
    """Dense logits of either form (top-k entries are reconstructed as in :func:`from_topk`)."""
    return from_topk(logits) if isinstance(logits, TopK) else logits


def stack(parts: list[np.ndarray] | list[TopK]) -> np.ndarray | TopK:
    """Stack per-teacher logits (N, C) or top-k entries into one (M, N, C) of the same form."""
    if parts and isinstance(parts[0], TopK):
        return TopK(np.stack([p.values for p in parts]), np.stack([p.indices for p in parts]),
                    np.stack([p.rest_lse for p in parts]), parts[0].num_classes)
    return np.stack(parts)


def concat_rows(a: np.ndarray | TopK, b: np.ndarray | TopK) -> np.ndarray | TopK:
    """Concatenate two logit sets of the same form along the example axis (axis 1): (M, N, C)
    dense or top-k, or span windows' (M, N, 2, L) start/end logits (always dense)."""
    if isinstance(a, TopK) and isinstance(b, TopK):
        return TopK(np.concatenate([a.values, b.values], axis=-2),
                    np.concatenate([a.indices, b.indices], axis=-2),
                    np.concatenate([a.rest_lse, b.rest_lse], axis=-1), a.num_classes)
    if isinstance(a, TopK) or isinstance(b, TopK):
        raise TypeError("cannot concatenate dense and top-k logits")
    return np.concatenate([a, b], axis=1)


def in_form(logits: np.ndarray, topk: int | None) -> np.ndarray | TopK:
    """``logits`` (..., C) in the form a spec asks for: top-k when ``0 < topk < C``, else dense."""
    return to_topk(logits, topk) if topk and topk < logits.shape[-1] else logits
