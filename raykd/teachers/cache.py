"""The per-teacher logit cache: frozen teachers' logits over a split, computed once.

An entry is one teacher's logits over one split in the form the spec asks for, as one
``.npz`` file read with ``allow_pickle=False``: dense (N, C) ``logits``, or top-k
(``cache.topk``: ``values`` and ``indices`` (N, k) plus the tail's logsumexp ``rest_lse``
(N,)), or span logits of the valid positions only (:class:`PackedSpans`: float16 values,
row offsets, context starts, L), and the ``sha256`` of those arrays, checked on every read. The
key hashes everything the entry depends on:

    key = sha256(teacher weights hash, model identity, dataset fingerprint, split,
                 preprocessing, dtype[, topk])

so a retrained teacher or changed data can never hit a stale entry. The model identity
(:func:`raykd.models.user.model_identity`) is the canonical JSON of the teacher's model
entry, kwargs included, and for a user module the sha256 of its source file: a kwarg that
carries no parameters, or an edited module, computes the logits again. Entries are written
atomically (temp file + rename): concurrent jobs sharing a cache directory are safe.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import zipfile
import zlib
from pathlib import Path

import numpy as np

from raykd.core.jobdir import atomic_path
from raykd.losses.topk import TopK
from raykd.teachers.span_cache import PackedSpans

SPAN_DTYPE = "span-float16"
"""The ``dtype`` field of a span entry's key: valid positions only, float16
(:mod:`raykd.teachers.span_cache`), whatever ``cache.dtype`` says."""
Entry = np.ndarray | TopK | PackedSpans


def cache_key(*, weights: str, model: str, fingerprint: str, split: str, preprocessing: str = "none",
              dtype: str = "float32", topk: int | None = None) -> str:
    """The entry name for one teacher's logits over one split (dense, or top-k).

    ``model`` is the teacher's model identity (:func:`raykd.models.user.model_identity`).
    """
    fields: dict[str, object] = {"weights": weights, "model": model, "data": fingerprint,
                                 "split": split, "prep": preprocessing, "dtype": dtype}
    if topk is not None:
        fields["topk"] = topk
    ident = json.dumps(fields, sort_keys=True)
    return hashlib.sha256(ident.encode()).hexdigest()[:32]


DAMAGED = (ValueError, EOFError, zipfile.BadZipFile, zlib.error, pickle.UnpicklingError)
"""What reading a truncated or altered entry raises (with a failed checksum, a ValueError)."""


def entry_digest(arrays: dict[str, np.ndarray]) -> str:
    """sha256 over an entry's arrays (names, dtypes, shapes, bytes, in name order)."""
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.asarray(arrays[name])
        h.update(f"{name}:{a.dtype.str}:{a.shape};".encode())
        h.update(a.tobytes(order="C"))
    return h.hexdigest()


class LogitCache:
    """A directory of ``<key>.npz`` entries; ``None`` as directory disables persistence.

    Every entry carries the sha256 of its arrays (:func:`entry_digest`), checked on each
    read: a truncated, altered or unreadable entry is never used. It is deleted, named in
    :attr:`rejected` (the job reports it) and read as a miss, so it is computed again.
    """

    def __init__(self, directory: str | Path | None) -> None:
        self.directory = Path(directory) if directory is not None else None
        self.rejected: list[str] = []
        if self.directory is not None:
            self.directory.mkdir(parents=True, exist_ok=True)

    def get(self, key: str) -> Entry | None:
        """The stored entry, or None on a miss (a damaged entry is dropped and counted)."""
        if self.directory is None:
            return None
        path = self.directory / f"{key}.npz"
        if not path.exists():
            return None
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {name: z[name] for name in z.files}
            stored = str(arrays.pop("sha256"))
            if stored != entry_digest(arrays):
                raise ValueError("its sha256 does not match its contents")
            if "logits" in arrays:
                return arrays["logits"]
            if "row_offsets" in arrays:
                return PackedSpans.from_arrays(arrays)
            return TopK(arrays["values"], arrays["indices"], arrays["rest_lse"],
                        int(arrays["num_classes"]))
        except KeyError as err:
            if "sha256" in str(err):
                return self._reject(path, ValueError("no sha256: written by an older raykd"))
            return self._reject(path, err)
        except DAMAGED as err:
            return self._reject(path, err)
        except OSError as err:  # unreadable now (permissions, a storage hiccup): not proof of damage
            self.rejected.append(f"logit cache entry {path.name} could not be read "
                                 f"({type(err).__name__}: {err}); it is computed again, the file is kept")
            return None

    def _reject(self, path: Path, err: BaseException) -> None:
        """Record and delete a damaged entry; None (a miss)."""
        self.rejected.append(f"logit cache entry {path.name} is damaged ({type(err).__name__}: "
                             f"{err}); it was deleted and is computed again")
        try:
            path.unlink(missing_ok=True)
        except OSError:
            pass  # a read-only cache: the entry stays, and is refused again next time
        return None

    def put(self, key: str, logits: Entry) -> None:
        """Store ``logits`` under ``key`` (unique temporary file, then an atomic rename)."""
        if self.directory is None:
            return
        if isinstance(logits, PackedSpans):
            arrays = logits.arrays()
        elif isinstance(logits, TopK):
            arrays = {"values": logits.values, "indices": logits.indices,
                      "rest_lse": logits.rest_lse, "num_classes": np.int64(logits.num_classes)}
        else:
            arrays = {"logits": logits}
        arrays = {k: np.asarray(v) for k, v in arrays.items()}
        with atomic_path(self.directory / f"{key}.npz") as tmp, open(tmp, "wb") as f:
            np.savez(f, sha256=np.str_(entry_digest(arrays)), **arrays)


def dense_spans(entry: PackedSpans) -> np.ndarray:
    """A packed span entry read back dense: float32 (N, 2, L), ``FILL`` (-1e4) at the invalid
    positions (every loss and evaluation masks them out)."""
    return entry.unpack(np.arange(len(entry)))[0]
