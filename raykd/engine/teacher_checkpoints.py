"""Which checkpoint each teacher starts from: the spec's file, a folder used as given
(``fine_tune: false``), this job's own from an earlier attempt, or one another job trained
and published to the shared cache (checked whole first); none means the teacher trains."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from raykd.core.faults import teacher_fault
from raykd.core.spec import SpecError
from raykd.data import Dataset
from raykd.data.paths import checked_checkpoint
from raykd.engine.context import Job
from raykd.models import CheckpointError, build_model, save_checkpoint
from raykd.models.checkpoint import CheckpointDamaged, checkpoint_info
from raykd.models.user import model_identity
from raykd.teachers import TeacherConfig
from raykd.teachers.teacher import read_fit_record

__all__ = ["check_head_labels", "earlier_fit", "given_as_is", "intact", "own_checkpoint",
           "teacher_cache_path", "teacher_configs"]


def teacher_configs(job: Job, data: Dataset, cache: Any) -> list[Any]:
    """Actor configs; a teacher without a checkpoint takes this job's earlier one, or the
    cache's."""
    configs = []
    for i, t in enumerate(job.spec.teachers):
        checkpoint = checked_checkpoint(t.checkpoint)  # the spec's file, checked once opened
        if checkpoint is None and not t.fine_tune:
            checkpoint = given_as_is(job, i, data)
        if checkpoint is None:
            # this job's own file counts only when resuming the same job (same spec, same dir)
            own = own_checkpoint(job, i) if job.attempt > 1 else None
            shared = teacher_cache_path(cache, job, i, data.train.fingerprint)
            for found in (own, shared):
                if found is not None and found.is_file() and intact(job, i, found):
                    checkpoint = str(found)
                    break
        configs.append(TeacherConfig(model=t.model.model_dump(), checkpoint=checkpoint, seed=t.seed,
                                     trained_path=str(own_checkpoint(job, i)),
                                     fault=teacher_fault(job.spec.faults, i,
                                                         job.layout.fault_marker(f"teacher-{i}"))))
    return configs


def teacher_cache_path(cache: Any, job: Job, index: int, fingerprint: str) -> Path | None:
    """Where a raykd-trained teacher is kept for reuse: keyed by everything that made it
    (a user module's source included)."""
    if cache.directory is None:
        return None
    t = job.spec.teachers[index]
    ident = json.dumps({"model": t.model.model_dump(mode="json"), "seed": t.seed,
                        "data": fingerprint,
                        "train": job.spec.teacher_train.model_dump(mode="json"),
                        "identity": model_identity(t.model.model_dump())}, sort_keys=True)
    digest = hashlib.sha256(ident.encode()).hexdigest()[:32]
    return cache.directory / "teachers" / f"{digest}.safetensors"


def own_checkpoint(job: Job, index: int) -> Path:
    return job.layout.teacher(index)


def given_as_is(job: Job, index: int, data: Dataset) -> str:
    """A teacher used as given (``fine_tune: false``): its folder's model, its head's label
    names checked against the data's classes, saved as this job's checkpoint of it
    (``teachers/teacher-<i>-given.safetensors``), which the teacher stage then loads like
    any given checkpoint: no training."""
    t = job.spec.teachers[index]
    model = build_model(t.model.model_dump(), data.input_shape, data.num_classes)
    where = f"teachers[{index}] ({t.model.path})"
    head = "ForQuestionAnswering" if getattr(data, "spans", None) is not None else \
        "ForSequenceClassification"
    archs = [str(a) for a in (model.hf.config.architectures or [])]
    if not any(a.endswith(head) for a in archs):
        raise SpecError(f"{where}: fine_tune: false needs a folder with a trained *{head} head; "
                        f"its config.json names {archs or 'no architectures'} (a base model: its "
                        "head would be random); use fine_tune: true to train one here")
    check_head_labels(model, where, data)
    path = job.layout.teacher(index, given=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(model, path, config=t.model.model_dump(), input_shape=data.input_shape,
                    num_classes=data.num_classes)
    job.say(f"teacher {index}: {t.model.path} used as given (fine_tune: false), not trained")
    return str(path)


def check_head_labels(model: Any, where: str, data: Dataset) -> None:
    """A fine-tuned text classifier's label names (its config's ``id2label``) must be the
    data's class names in the same order; generic names (``LABEL_0``...) are taken as the
    data's order.

    Raises:
        SpecError: naming both lists when they differ.
    """
    import re

    hf = getattr(model, "hf", None)
    labels = getattr(getattr(hf, "config", None), "id2label", None) or {}
    names = [str(labels[i]) for i in sorted(labels)]
    if data.class_names is None or all(re.fullmatch(r"LABEL_\d+", n) for n in names):
        return
    if names != list(data.class_names):
        raise SpecError(f"{where}: its head's labels {names} are not the data's classes "
                        f"{list(data.class_names)} in order; give a classifier fine-tuned on "
                        "these classes, or fine_tune: true to train its head here")


def intact(job: Job, index: int, path: Path) -> bool:
    """Whether a teacher checkpoint raykd trained earlier reads whole and passes its checksum.

    A damaged one is reported, deleted and not used: the teacher trains again.
    """
    try:
        checkpoint_info(path)
        return True
    except CheckpointDamaged as err:
        job.say(f"teacher {index}: {err}; it was deleted and the teacher trains again")
        path.unlink(missing_ok=True)
        return False
    except CheckpointError as err:  # unreadable now (permissions, storage): kept for other jobs
        job.say(f"teacher {index}: {err}; it is not used here and the teacher trains again")
        return False


def earlier_fit(job: Job, index: int, checkpoint: str | None) -> dict[str, Any] | None:
    """The fit an earlier attempt of this job made of teacher ``index``, when this attempt
    loads that teacher's own checkpoint: its result (``seconds``, ``final_loss``), as the
    checkpoint's metadata keeps it (:meth:`raykd.teachers.Teacher.fit`); None otherwise (a
    given checkpoint, or one another job trained and published to the cache)."""
    if checkpoint is None or Path(checkpoint) != own_checkpoint(job, index):
        return None
    record = read_fit_record(checkpoint)
    return dict(record["result"]) if record is not None else None
