"""The student stage: one student per method entry, born-again generations chained.

Each (method entry, generation) is one fit, where
:func:`raykd.engine.student_workers.choose_runner` decided once Ray was up: in the driver's
own process (``driver``: one worker, a local Ray of this process's, CPUs), on the job's
student actor, started once and reused by every student (``actor``, one worker), or a Ray
Train fit of ``num_workers`` DDP workers (``train``). A student an earlier attempt of this
job finished is taken from disk (its record and checkpoint), not trained again; one it left
half-way resumes from its last reported state.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from raykd.core.events import StudentFinished
from raykd.core.faults import student_fault
from raykd.core.jobdir import atomic_path
from raykd.core.spec import JobSpec, MethodSpec
from raykd.data import Dataset
from raykd.engine.cluster import resolve_gpu
from raykd.engine.context import Job
from raykd.engine.scores import model_scores, span_event_fields, span_said
from raykd.engine.student_workers import choose_runner, stop_student_worker, student_worker
from raykd.engine.teacher_logits import report_rejected, split_logits
from raykd.engine.teacher_stage import TeacherSet, start_pool
from raykd.losses import accuracy_weights
from raykd.models import load_checkpoint
from raykd.models.hf import save_hf_folder
from raykd.teachers import TeacherConfig
from raykd.train.actor import train_student_actor
from raykd.train.config import StudentConfig, teacher_accuracy
from raykd.train.driver import train_student_driver
from raykd.train.online import InProcessTeachers
from raykd.train.runs import StudentRun
from raykd.train.steps import accuracy, predict_logits


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def ban_accuracy(logits: list[np.ndarray], y: np.ndarray) -> float:
    """Born-again ensemble: the mean of the generations' predicted probabilities."""
    return accuracy(np.mean([_softmax(z) for z in logits], axis=0), y)


def evaluate_checkpoint(path: str | Path, x: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    """Accuracy and logits of a saved model over (x, y)."""
    logits = predict_logits(load_checkpoint(path), x)
    return accuracy(logits, y), logits


def score_checkpoint(path: str | Path, data: Dataset) -> tuple[dict[str, Any], np.ndarray]:
    """A saved model's scores on val and test (:func:`raykd.engine.scores.model_scores`:
    accuracies, macro-F1 for text, SQuAD EM/F1 for spans), and its test logits."""
    model = load_checkpoint(path)
    val, test = predict_logits(model, data.val.x), predict_logits(model, data.test.x)
    return model_scores(data, val, test), test


def generation_seed(seed: int, generation: int) -> int:
    """The student seed of born-again generation ``generation`` (1-based).

    Generation 1 uses ``train.seed``; generation k > 1 a seed derived from (seed, k), so
    every generation starts from its own weights and batch order (BAN ensembles need
    that diversity). Recorded in each generation's result row.
    """
    if generation == 1:
        return seed
    return int(np.random.SeedSequence([seed, generation]).generate_state(1)[0])


def plan_size(spec: JobSpec) -> tuple[int, int]:
    """(students, student epochs) of the whole job: the progress denominator."""
    students = sum(m.generations for m in spec.methods)
    return students, students * spec.train.epochs


def method_row(m: MethodSpec) -> dict[str, Any]:
    return {"label": m.display, **m.model_dump(exclude={"label"})}


def run_students(job: Job, data: Dataset, teachers: TeacherSet, cache: Any,
                 refs: dict[str, Any]) -> None:
    """One student per method entry; born-again generations chain teacher -> student."""
    job.result["students"] = []
    for index, m in enumerate(job.spec.methods):
        gens = _born_again(job, data, index, m, teachers, cache, refs)
        row: dict[str, Any] = {**method_row(m), "generations": gens,
                               "val_accuracy": gens[-1]["val_accuracy"],
                               "test_accuracy": gens[-1]["test_accuracy"],
                               "test_macro_f1": gens[-1]["test_macro_f1"]}
        if data.spans is not None:
            row["span"] = gens[-1]["span"]
        elif len(gens) > 1:
            row["ban_test_accuracy"] = ban_accuracy([g["test_logits"] for g in gens], data.test.y)
        for g in gens:
            g.pop("test_logits")
        job.result["students"].append(row)
        job.say(f"student [{m.display}]: test accuracy {row['test_accuracy']:.4f}" + span_said(row))


def _generation_method(m: MethodSpec, generation: int) -> MethodSpec:
    """Generation >= 2 of a born-again run distills from the previous one (kd when 'none')."""
    if generation > 1 and m.method == "none":
        return m.model_copy(update={"method": "kd"})
    return m


def _born_again(job: Job, data: Dataset, index: int, m: MethodSpec, teachers: TeacherSet,
                cache: Any, refs: dict[str, Any]) -> list[dict[str, Any]]:
    """Generation 1 learns from ``teachers``, generation k from generation k-1's logits."""
    source, gens = teachers, []
    try:
        for g in range(1, m.generations + 1):
            gen = job.finished_student(index, g)
            if gen is not None:
                scores, gen["test_logits"] = score_checkpoint(gen["checkpoint"], data)
                gen |= scores
                job.emit(StudentFinished(student=index, generation=g, label=m.display,
                                         checkpoint=gen["checkpoint"],
                                         val_accuracy=gen["val_accuracy"],
                                         test_accuracy=gen["test_accuracy"],
                                         test_macro_f1=gen["test_macro_f1"],
                                         reused=True, **span_event_fields(scores)))
                job.say(f"student [{m.display}] generation {g}: finished by an earlier run, reused")
            else:
                gen = train_one(job, data, _generation_method(m, g), source, refs, index=index,
                                label=m.display, generation=g)
            gens.append(gen)
            if g == m.generations:
                break
            with job.stage("born_again_teacher"):
                if source is not teachers and source.pool is not None:
                    source.pool.shutdown()
                if resolve_gpu(job.spec.scaling.use_gpu):
                    stop_student_worker(job)  # its GPU goes to this teacher; restarted on use
                cfg = TeacherConfig(model=job.spec.student.model.model_dump(),
                                    checkpoint=gen["checkpoint"])
                source = TeacherSet(logits={}, checkpoints=[gen["checkpoint"]],
                                    pool=start_pool([cfg], data, job))
                source.logits = split_logits(source.pool, data, job, cache, refs,
                                             f"{m.display} generation {g}")
                report_rejected(job, cache)
                if not job.spec.data.augment or job.in_process_teachers:
                    source.pool.shutdown()
                    local = [{"model": cfg.model, "checkpoint": cfg.checkpoint}]
                    source.pool = InProcessTeachers(local) if job.spec.data.augment else None
    finally:
        if source is not teachers and source.pool is not None:
            source.pool.shutdown()
    return gens


def _fault(job: Job, index: int, generation: int) -> dict[str, Any] | None:
    """The spec's student faults for this student (``raykd.core.faults``; None: none)."""
    return student_fault(job.spec.faults, job.layout.fault_marker(f"{index}-g{generation}"))


def student_refs(method: MethodSpec, source: TeacherSet, refs: dict[str, Any]) -> dict[str, Any]:
    """What a student's workers read: the split refs, and its teachers' logits or actors.

    Cached logits are ``source.train_ref()``, in the spec's form (top-k with
    ``cache.topk``, the same object a sweep trial reads); online teachers (augmentation)
    are the live actors, or the configs of the teachers the worker loads in its own
    process (:class:`~raykd.train.online.InProcessTeachers`); ``method: none`` gets neither.
    """
    online = None if method.method == "none" else source.pool
    local = online.configs if isinstance(online, InProcessTeachers) else None
    return {"data": {k: refs[k] for k in ("x_train", "y_train", "x_val", "y_val")},
            "teacher_train": (None if method.method == "none" or online is not None
                              else source.train_ref()),
            "teacher_actors": None if online is None or local else online.actors,
            "teacher_replicas": getattr(online, "replicas", False),
            "teacher_local": local}


def _accuracy_if_weighted(method: MethodSpec, source: TeacherSet,
                          data: Dataset) -> tuple[float, ...] | None:
    """The teachers' validation accuracies when the method weights teachers by them."""
    if method.teacher_weights == "uniform" or "val" not in source.logits:
        return None
    return teacher_accuracy(source.logits["val"], data.val.y)


def _weights_used(config: StudentConfig) -> list[float] | None:
    """The per-teacher weights the student's loss used (``teacher_weights: val_accuracy``):
    :func:`raykd.losses.accuracy_weights` of the teachers' val accuracies, as the loop
    computes them (:func:`raykd.train.loop.loop_teacher_weights`); None for uniform."""
    if config.method.method == "none" or config.method.teacher_weights == "uniform":
        return None
    if not config.teacher_accuracy:
        return None
    weights = accuracy_weights(config.teacher_accuracy, num_classes=config.num_classes)
    return [float(w) for w in weights]


def train_one(job: Job, data: Dataset, method: MethodSpec, source: TeacherSet, refs: dict[str, Any],
              *, index: int, label: str, generation: int) -> dict[str, Any]:
    """Fit one student (resuming an earlier attempt's state) and evaluate it.

    In the driver's process, on the job's student actor, or a Ray Train fit
    (:func:`~raykd.engine.student_workers.choose_runner`).
    """
    spec = job.spec
    online = source.pool is not None and method.method != "none"
    seed = generation_seed(spec.train.seed, generation)
    config = StudentConfig.for_job(spec, data, method, seed=seed,
                                   label=f"{label} g{generation}" if generation > 1 else label,
                                   teacher_accuracy=_accuracy_if_weighted(method, source, data))
    if online:
        source.pool.set_clients(spec.scaling.num_workers)
    run = StudentRun(student=index, generation=generation, label=config.label,
                     epochs=config.train.epochs, sink=job.sink,
                     max_failures=spec.scaling.max_failures,
                     resume_from=job.resume_point(index, generation),
                     fault=_fault(job, index, generation))
    if run.resume_from:
        job.say(f"student [{config.label}]: resuming from {run.resume_from}")
    name = f"student-{index}-g{generation}"
    out = job.layout.student(name)
    runner = choose_runner(job)
    with job.stage("students"):
        if runner == "driver":
            res = train_student_driver(config, refs=student_refs(method, source, refs),
                                       storage=job.layout.student_states,
                                       name=f"{name}-a{job.attempt}", out=out, run=run)
        elif runner == "actor":
            res = train_student_actor(student_worker(job), config,
                                      refs=student_refs(method, source, refs),
                                      storage=job.layout.student_states,
                                      name=f"{name}-a{job.attempt}", out=out, run=run)
        else:
            # Ray Train (ray.train.torch: seconds of imports) loads only for runner 'train'
            from raykd.train.trainer import train_student_ray

            res = train_student_ray(
                config, refs=student_refs(method, source, refs),
                num_workers=spec.scaling.num_workers, use_gpu=resolve_gpu(spec.scaling.use_gpu),
                cpus_per_worker=spec.scaling.cpus_per_worker, storage=job.layout.ray_train,
                name=f"{name}-a{job.attempt}", out=out, run=run,
            )
        with job.timer.stage("student_scoring"):  # its best weights on val and test
            scores, test_logits = score_checkpoint(res.checkpoint, data)
    for what, seconds in res.costs.items():  # inside "students": where its fixed costs went
        job.timer.add(f"student_{what}", seconds)
    record = {"generation": generation, "method": method.method, "seed": config.train.seed,
              "teacher_weights": _weights_used(config),
              "checkpoint": str(res.checkpoint), "val_accuracy": scores["val_accuracy"],
              "best_epoch": res.best_epoch, "seconds": res.seconds, "runner": runner,
              "history": res.history}
    if "span" in scores:
        record["span"] = scores["span"]
    with atomic_path(job.student_record(index, generation)) as tmp:
        tmp.write_text(json.dumps(record, indent=2))
    job.emit(StudentFinished(student=index, generation=generation, label=config.label,
                             checkpoint=record["checkpoint"], val_accuracy=scores["val_accuracy"],
                             test_accuracy=scores["test_accuracy"],
                             test_macro_f1=scores["test_macro_f1"], **span_event_fields(scores)))
    return {**record, **scores, "test_logits": test_logits}


def export_hf_students(job: Job, data: Dataset) -> None:
    """Every ``name: hf`` student also as a Hugging Face folder beside its checkpoint
    (``<checkpoint stem>-hf/``: config with the class names, safetensors weights, tokenizer),
    which ``AutoModelForSequenceClassification`` (text) or ``AutoModelForQuestionAnswering``
    (spans) and ``AutoTokenizer`` load without raykd. The tokenizer's ``model_max_length`` is
    the length the job cut: the model's ``max_length`` for text, the windows' (``data.max_length``)
    for spans, padded and truncated on the right."""
    if job.spec.student.model.name != "hf":
        return
    length = None if data.spans is None else data.spans.max_length
    for student in job.result.get("students", []):
        for gen in student["generations"]:
            ckpt = Path(gen["checkpoint"])
            folder = ckpt.with_name(f"{ckpt.stem}-hf")
            threshold = (gen.get("span") or {}).get("threshold")
            save_hf_folder(load_checkpoint(ckpt), folder, class_names=data.class_names,
                           max_length=length, null_threshold=threshold)
            gen["hf_folder"] = str(folder)
