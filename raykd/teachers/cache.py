"""The per-teacher logit cache: frozen teachers' logits over a split, computed once.

An entry is one teacher's logits over one split, shape (N, C), stored as a ``.npy`` file
(read with ``allow_pickle=False``). Its key hashes everything the logits depend on:

    key = sha256(teacher weights hash, dataset fingerprint, split, preprocessing, dtype)

so a retrained teacher or changed data can never hit a stale entry. Entries are written
atomically (temp file + rename): concurrent jobs sharing a cache directory are safe.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import numpy as np


def cache_key(*, weights: str, fingerprint: str, split: str, preprocessing: str = "none",
              dtype: str = "float32") -> str:
    """The entry name for one teacher's logits over one split."""
    ident = json.dumps(
        {"weights": weights, "data": fingerprint, "split": split, "prep": preprocessing, "dtype": dtype},
        sort_keys=True,
    )
    return hashlib.sha256(ident.encode()).hexdigest()[:32]


class LogitCache:
    """A directory of ``<key>.npy`` files; ``None`` as directory disables persistence."""

    def __init__(self, directory: str | Path | None) -> None:
        self.directory = Path(directory) if directory is not None else None
        if self.directory is not None:
            self.directory.mkdir(parents=True, exist_ok=True)

    def get(self, key: str) -> np.ndarray | None:
        """The stored array, or None on a miss (or an unreadable entry, which is dropped)."""
        if self.directory is None:
            return None
        path = self.directory / f"{key}.npy"
        if not path.exists():
            return None
        try:
            return np.load(path, allow_pickle=False)
        except (OSError, ValueError):
            path.unlink(missing_ok=True)
            return None

    def put(self, key: str, logits: np.ndarray) -> None:
        """Store ``logits`` under ``key`` (atomic replace)."""
        if self.directory is None:
            return
        fd, tmp = tempfile.mkstemp(dir=self.directory, suffix=".npy.tmp")
        with os.fdopen(fd, "wb") as f:
            np.save(f, np.ascontiguousarray(logits), allow_pickle=False)
        os.replace(tmp, self.directory / f"{key}.npy")
