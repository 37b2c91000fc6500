"""The per-teacher logit cache: frozen teachers' logits over a split, computed once.

An entry is one teacher's logits over one split in the form the spec asks for: dense
(N, C) as a ``.npy`` file, or top-k (``cache.topk``: values and indices (N, k) plus the
tail's logsumexp (N,)) as a ``.npz`` file; both are read with ``allow_pickle=False``. The
key hashes everything the entry depends on:

    key = sha256(teacher weights hash, dataset fingerprint, split, preprocessing, dtype[, topk])

so a retrained teacher or changed data can never hit a stale entry. Entries are written
atomically (temp file + rename): concurrent jobs sharing a cache directory are safe.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from raykd.jobdir import atomic_path
from raykd.losses.topk import TopK


def cache_key(*, weights: str, fingerprint: str, split: str, preprocessing: str = "none",
              dtype: str = "float32", topk: int | None = None) -> str:
    """The entry name for one teacher's logits over one split (dense, or top-k)."""
    fields: dict[str, object] = {"weights": weights, "data": fingerprint, "split": split,
                                 "prep": preprocessing, "dtype": dtype}
    if topk is not None:
        fields["topk"] = topk
    ident = json.dumps(fields, sort_keys=True)
    return hashlib.sha256(ident.encode()).hexdigest()[:32]


class LogitCache:
    """A directory of ``<key>.npy`` files; ``None`` as directory disables persistence."""

    def __init__(self, directory: str | Path | None) -> None:
        self.directory = Path(directory) if directory is not None else None
        if self.directory is not None:
            self.directory.mkdir(parents=True, exist_ok=True)

    def get(self, key: str) -> np.ndarray | TopK | None:
        """The stored entry, or None on a miss (or an unreadable entry, which is dropped)."""
        if self.directory is None:
            return None
        for path in (self.directory / f"{key}.npy", self.directory / f"{key}.npz"):
            if not path.exists():
                continue
            try:
                if path.suffix == ".npy":
                    return np.load(path, allow_pickle=False)
                with np.load(path, allow_pickle=False) as z:
                    return TopK(z["values"], z["indices"], z["rest_lse"], int(z["num_classes"]))
            except (OSError, ValueError, KeyError):
                path.unlink(missing_ok=True)
        return None

    def put(self, key: str, logits: np.ndarray | TopK) -> None:
        """Store ``logits`` under ``key`` (unique temporary file, then an atomic rename)."""
        if self.directory is None:
            return
        suffix = ".npz" if isinstance(logits, TopK) else ".npy"
        with atomic_path(self.directory / f"{key}{suffix}") as tmp, open(tmp, "wb") as f:
            if isinstance(logits, TopK):
                np.savez(f, values=logits.values, indices=logits.indices,
                         rest_lse=logits.rest_lse, num_classes=np.int64(logits.num_classes))
            else:
                np.save(f, np.ascontiguousarray(logits), allow_pickle=False)
