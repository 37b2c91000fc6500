"""The prefix every job shares: data -> model checks -> Ray -> splits -> teachers.

``run_job``, ``run_sweep`` and the benchmarks all go through :func:`prepare` (or its
parts), so data is checked, placed and taught the same way everywhere. Each stage has its
own module:

1. data (:mod:`raykd.engine.data_stage`): load and split, fingerprint each split; check
   every model against it (:mod:`raykd.engine.model_checks`);
2. Ray (:mod:`raykd.engine.cluster`): join ``RAY_ADDRESS`` or start a local Ray; put each
   split in the object store once;
3. teachers (:mod:`raykd.engine.teacher_stage`): one Ray actor each (own GPU when there are
   GPUs); train those without a checkpoint in parallel (a teacher an earlier attempt of this
   job trained, or another job published to the cache, is loaded instead:
   :mod:`raykd.engine.teacher_checkpoints`); each teacher's logits over train/val/test from
   the logit cache or computed once (:mod:`raykd.engine.teacher_logits`); teacher and
   ensemble scores (:mod:`raykd.engine.scores`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from raykd.data import Dataset
from raykd.engine.cluster import ensure_ray, put_splits
from raykd.engine.context import Job
from raykd.engine.data_stage import load_data
from raykd.engine.teacher_logits import logit_cache
from raykd.engine.teacher_stage import TeacherSet, run_teachers

__all__ = ["Prepared", "prepare", "prepare_splits"]


@dataclass
class Prepared:
    """What the job prefix hands to students and sweeps."""

    data: Dataset
    refs: dict[str, Any]
    cache: Any
    teachers: TeacherSet


def prepare(job: Job, *, cache: Any = None,
            on_ray: Callable[[Dataset], None] | None = None) -> Prepared:
    """Data, Ray, splits and teachers, in that order (see the module docstring).

    ``on_ray(data)`` runs once Ray is up and the data loaded, before any teacher work: the
    job checks there that its students fit the cluster and the data (a job that cannot
    run fails before it trains or caches a teacher), and starts its student actor, so that
    its process starts while the teachers train.
    """
    data, refs = prepare_splits(job, on_ray=on_ray)
    cache = cache if cache is not None else logit_cache(job)
    teachers = run_teachers(job, data, cache, refs)
    return Prepared(data=data, refs=refs, cache=cache, teachers=teachers)


def prepare_splits(job: Job, *, on_ray: Callable[[Dataset], None] | None = None
                   ) -> tuple[Dataset, dict[str, Any]]:
    """The stages before the teachers: data, Ray, ``on_ray(data)``, then the splits in the
    object store; the data and the splits' refs (a sweep without teachers stops here)."""
    data = load_data(job)
    with job.stage("ray_init"):
        ensure_ray()
    if on_ray is not None:
        on_ray(data)
    return data, put_splits(data)
