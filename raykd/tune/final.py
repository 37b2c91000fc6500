"""The sweep's last stage: the best configuration's student, retrained on train+val and tested.

Its checkpoint carries the class names and the fitted preprocessing (a table's or an
image dataset's) in its metadata, as a ``raykd run`` student's does, so that
``raykd predict`` and ``raykd export`` take it alone (or the sweep's directory).

The teachers' logits of train+val are the cached train and val logits concatenated along
the example axis (M, N_train + N_val, C); no teacher runs again.

Span data (SQuAD windows): the final student is scored per question, SQuAD v2.0 EM/F1 on
test at the no-answer threshold that maximizes F1 on val (``span``, as a run's student);
val is part of its training data here, so that threshold is chosen on seen questions. The
threshold goes into the checkpoint (``null_threshold``), which ``raykd predict`` answers
with. An ``hf`` student is also written as a Hugging Face folder beside it
(``best_student-hf/``), as a run's students are.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import ray

from raykd.core.jobdir import JobLayout
from raykd.data import Dataset
from raykd.engine import Job, TeacherSet, model_scores
from raykd.losses.topk import TopK, concat_rows
from raykd.models import describe_checkpoint, save_checkpoint
from raykd.models.hf import save_hf_folder
from raykd.train.config import StudentConfig
from raykd.train.loop import LoopData, run_student
from raykd.train.steps import predict_logits
from raykd.tune.space import SWEPT, TrialPlan, trial_method


def _retrain_task(
    config: StudentConfig,
    x: np.ndarray,
    y: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    logits: np.ndarray | TopK | None,
    use_gpu: bool,
) -> tuple[Any, list[dict[str, Any]]]:
    """Train the best configuration's student in one process; return the model and history."""
    model: list[Any] = []

    def keep(metrics: dict[str, Any], state: Any) -> None:
        model[:] = [state.model]

    data = LoopData(x_train=x, y_train=y, x_val=x_val, y_val=y_val, teacher_train=logits)
    history = run_student(
        config, data, report=keep, wrap=(lambda m: m.to("cuda")) if use_gpu else (lambda m: m)
    )
    return model[0].cpu(), history


def final_student(
    job: Job,
    data: Dataset,
    teachers: TeacherSet,
    shared: dict[str, Any],
    best: dict[str, Any],
    plan: TrialPlan,
) -> dict[str, Any]:
    """Retrain ``best`` on train+val (teacher logits concatenated), test it, save it.

    One process with the whole CPUs the trial's workers had (at least one): the global
    batch and the gradient are those of the N-worker run (DDP averages the ranks'
    gradients).
    """
    spec, start = job.spec, time.perf_counter()
    method = trial_method(spec.methods[0], best)
    x = np.concatenate([data.train.x, data.val.x])
    y = np.concatenate([data.train.y, data.val.y])
    logits = None
    if method.method != "none":
        logits = concat_rows(teachers.logits["train"], teachers.logits["val"])
    cpus = max(1, math.floor(min(plan.cpus_per_trial, ray.cluster_resources().get("CPU", 1))))
    config = replace(shared["student"], threads=cpus, method=method, label="best on train+val")
    task = ray.remote(_retrain_task).options(num_cpus=cpus, num_gpus=1 if shared["use_gpu"] else 0)
    model, history = ray.get(
        task.remote(config, x, y, data.val.x, data.val.y, logits, shared["use_gpu"])
    )
    scores = model_scores(data, predict_logits(model, data.val.x),
                          predict_logits(model, data.test.x))
    path = save_checkpoint(
        model,
        job.layout.best_student,
        **config.checkpoint_meta,
        extra={"method": method.model_dump(), "trained_on": "train+val"},
        class_names=data.class_names,
        preprocessing=final_preprocessing(data, scores.get("span")),
    )
    row = {"test_accuracy": scores["test_accuracy"], **_span(scores.get("span"))}
    if scores.get("test_macro_f1") is not None:  # text classification
        row["test_macro_f1"] = scores["test_macro_f1"]
    if spec.student.model.name == "hf":
        row["hf_folder"] = str(_hf_folder(model, path, data, scores.get("span")))
    job.log(f"best student ({method.display}) retrained on train+val: {_said(row)}")
    return {
        "checkpoint": str(path),
        **row,
        "method": method.model_dump(),
        "trained_on": {"train": len(data.train), "val": len(data.val)},
        "history": history,
        "seconds": time.perf_counter() - start,
        "note": "history's val_accuracy is on val, which is part of the training data here",
    }


def _span(span: dict[str, Any] | None) -> dict[str, Any]:
    return {} if span is None else {"span": span}


def _said(row: dict[str, Any]) -> str:
    if "span" in row:
        test = row["span"]["test"]
        return f"test F1 {test['f1']:.2f}, EM {test['exact']:.2f}"
    return f"test accuracy {row['test_accuracy']:.4f}"


def final_preprocessing(data: Dataset, span: dict[str, Any] | None) -> dict[str, Any] | None:
    """The checkpoint's preprocessing record: the data's, with the no-answer threshold of a
    span student (``null_threshold``, chosen on val) that ``raykd predict`` answers with."""
    record = data.prep_record
    if record is None or span is None:
        return record
    return {**record, "null_threshold": span["threshold"]}


def _hf_folder(model: Any, checkpoint: Path, data: Dataset,
               span: dict[str, Any] | None) -> Path:
    """``<checkpoint stem>-hf/``: the student as a Hugging Face folder (no raykd needed; a
    span student's no-answer threshold in its config.json)."""
    length = None if data.spans is None else data.spans.max_length
    return save_hf_folder(model, checkpoint.with_name(f"{checkpoint.stem}-hf"),
                          class_names=data.class_names, max_length=length,
                          null_threshold=None if span is None else span["threshold"])


def reuse_final(job_dir: Path, best: dict[str, Any], data: Dataset,
                hf: bool = False) -> dict[str, Any] | None:
    """The final student of an earlier call, when it was trained for this same best config
    and carries what a new one does (span scores for span data, the Hugging Face folder of an
    ``hf`` student); its checkpoint then given the class names and preprocessing."""
    path = JobLayout(job_dir).sweep
    if not path.exists():
        return None
    old = json.loads(path.read_text())
    final, prev = old.get("final"), old.get("best") or {}
    if not final or not Path(final["checkpoint"]).exists():
        return None
    if any(prev.get(k) != best.get(k) for k in ("trial_id", *SWEPT)):
        return None
    if (data.spans is not None and not final.get("span")) or (
            hf and not (final.get("hf_folder") and Path(final["hf_folder"]).is_dir())):
        return None  # trained by an older raykd, without what a final student now carries
    if data.class_names is not None or data.prep_record is not None:
        describe_checkpoint(final["checkpoint"], class_names=data.class_names,
                            preprocessing=final_preprocessing(data, final.get("span")))
    return dict(final)
