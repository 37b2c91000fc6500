"""The teachers' logits over train/val/test: the logit cache a job uses, the logits read from
it without starting an actor when every entry is there, or computed by the teacher actors;
each checked for NaN/inf, with the cache's hits, sizes and damaged entries in the result."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from raykd.core.atomic_files import ensure_dir
from raykd.core.jobdir import StorageLayout
from raykd.core.spec import JobSpec
from raykd.data import DataError, Dataset
from raykd.engine.context import Job
from raykd.losses.topk import TopK, stack
from raykd.models import load_checkpoint, weights_hash
from raykd.models.user import model_identity
from raykd.teachers.cache import SPAN_DTYPE, LogitCache, cache_key, dense_spans
from raykd.teachers.pool import stored_bytes

__all__ = ["Logits", "cache_dir", "cached_logits", "checked", "entry_size", "logit_cache",
           "report_rejected", "split_logits"]

Logits = np.ndarray | TopK


def cache_dir(spec: JobSpec) -> str:
    """The shared cache directory: ``cache.dir``, or ``<storage>/cache``."""
    return spec.cache.dir or str(StorageLayout(Path(spec.storage)).cache)


def logit_cache(job: Job) -> Any:
    """The logit cache: shared by jobs, or (``cache.enabled: false``) this job's own."""
    spec = job.spec
    if not spec.cache.enabled:  # no sharing; a resumed attempt of this job still reuses them
        return LogitCache(ensure_dir(job.layout.logits, "the job directory"))
    where = "cache.dir" if spec.cache.dir else "storage"
    return LogitCache(ensure_dir(Path(cache_dir(spec)), where))


def checked(logits: Logits, who: str, split: str) -> Logits:
    """Raise a named DataError when a teacher's logits hold NaN or inf."""
    parts = (logits.values, logits.rest_lse) if isinstance(logits, TopK) else (logits,)
    for m in range(len(parts[0])):
        if not all(np.isfinite(p[m]).all() for p in parts):
            raise DataError(
                f"{who} {m} logits contain NaN/inf on the {split} split; check that teacher's "
                f"checkpoint (a finite model is required)"
            )
    return logits


def split_logits(pool: Any, data: Dataset, job: Job, cache: Any, refs: dict[str, Any],
                 who: str) -> dict[str, Logits]:
    """Each teacher's logits over train/val/test (cached), checked for NaN/inf."""
    out: dict[str, Logits] = {}
    stats: dict[str, Any] = {}
    for split in ("train", "val", "test"):
        part = getattr(data, split)
        got = pool.split_logits(split, refs[f"x_{split}"], part.fingerprint,
                                cache=cache, dtype=job.spec.cache.dtype, topk=job.spec.cache.topk,
                                spans=data.spans is not None)
        out[split] = checked(got.logits, who, split)
        stats[split] = {"cache_hits": got.cache_hits,
                        "teacher_forward_examples": got.forward_examples,
                        "seconds": got.seconds, "cache_keys": got.keys,
                        **entry_size(got.stored_bytes, len(got.keys), len(part))}
    job.result.setdefault("logit_cache", {})[who] = stats
    return out


def entry_size(stored: int, teachers: int, rows: int) -> dict[str, float]:
    """``bytes_per_window_per_teacher`` (per row: a window, an example) of a split's stored
    cache entries; span entries hold the valid positions only, in float16."""
    return {"bytes_per_window_per_teacher": stored / max(1, teachers * rows)}


def report_rejected(job: Job, cache: Any) -> None:
    """Say each damaged logit-cache entry this job found (deleted, computed again)."""
    rejected = getattr(cache, "rejected", [])
    for line in rejected:
        job.say(line)
    if rejected:
        job.result.setdefault("damaged_files", []).extend(rejected)
    rejected.clear()


def cached_logits(job: Job, data: Dataset, cache: Any,
                  configs: list[Any]) -> dict[str, Logits] | None:
    """Every teacher's logits over train/val/test from the cache, without starting an actor.

    Only when every teacher has a checkpoint (given, or trained earlier) and all their
    entries are in the cache: the
    keys are those :meth:`~raykd.teachers.TeacherPool.split_logits` computes, from the
    weights hash of each checkpoint loaded here (its shape and classes checked as an
    actor would). None on any miss: the actors then start and fill the gaps.
    """
    spec = job.spec
    dtype = SPAN_DTYPE if data.spans is not None else spec.cache.dtype
    if cache.directory is None or any(c.checkpoint is None for c in configs):
        return None
    out: dict[str, Logits] = {}
    stats: dict[str, Any] = {}
    with job.stage("teacher_logits"):
        hashes = [weights_hash(load_checkpoint(c.checkpoint, config=c.model,
                                               input_shape=data.input_shape,
                                               num_classes=data.num_classes)) for c in configs]
        models = [model_identity(c.model) for c in configs]
        for split in ("train", "val", "test"):
            keys = [cache_key(weights=h, model=model, fingerprint=getattr(data, split).fingerprint,
                              split=split, dtype=dtype, topk=spec.cache.topk)
                    for h, model in zip(hashes, models, strict=True)]
            found: list[Any] = [cache.get(k) for k in keys]
            if any(f is None for f in found):
                return None
            size = entry_size(sum(stored_bytes(f) for f in found), len(keys),
                              len(getattr(data, split)))
            if data.spans is not None:
                found = [dense_spans(f) for f in found]
            out[split] = checked(stack(found), "teacher", split)
            stats[split] = {"cache_hits": len(keys), "teacher_forward_examples": 0,
                            "seconds": 0.0, "cache_keys": keys, **size}
    job.result.setdefault("logit_cache", {})["teacher"] = stats
    return out
