"""The engine's public API: what ``raykd.tune``, ``raykd.bench`` and users call.

One way through a job: its context (id, directory, events: :class:`Job`, :func:`open_job`),
the stages every job shares (:func:`prepare`: data, Ray, splits, teachers and their
logits), the lifecycle around them (:class:`Lifecycle`: console, result, end event, with
callbacks), and :func:`run_job`, which ties them together with the students. The modules
behind these names are the engine's own: import from ``raykd.engine``, not from them.
"""

from raykd.engine.cluster import ensure_ray, put_splits, resolve_gpu
from raykd.engine.context import Job, open_job
from raykd.engine.data_record import dataset_row
from raykd.engine.data_stage import load_data
from raykd.engine.lifecycle import Lifecycle, LifecycleCallback
from raykd.engine.prepare import Prepared, prepare, prepare_splits
from raykd.engine.run import run_job, versions
from raykd.engine.scores import ensemble_accuracy, model_scores
from raykd.engine.teacher_logits import cache_dir
from raykd.engine.teacher_stage import TeacherSet, run_teachers

__all__ = [
    "Job",
    "Lifecycle",
    "LifecycleCallback",
    "Prepared",
    "TeacherSet",
    "cache_dir",
    "dataset_row",
    "ensemble_accuracy",
    "ensure_ray",
    "load_data",
    "model_scores",
    "open_job",
    "prepare",
    "prepare_splits",
    "put_splits",
    "resolve_gpu",
    "run_job",
    "run_teachers",
    "versions",
]
