"""``raykd bench quality --text``: KD and WKD from fine-tuned transformers on BBC News.

The scenario: BBC News (2,225 articles, 5 classes; split 70/10/20 with seed 0) at
``max_length`` 64 tokens, where a small student has room to learn from its teachers.

1. **Teachers**: three MiniLM-L6 models (the packaged all-MiniLM-L6-v2 cut to 6, 4 and 3
   layers, seeds 1, 2, 3) fine-tuned by raykd's teacher stage
   (:func:`raykd.engine.teacher_stage.run_teachers`: the teacher actors train them, 1 epoch,
   AdamW lr 1e-4, linear warm-up 0.1 then decay, batch 16). Trained once, kept under
   ``<out>/cache/teachers``; their logits are cached under ``<out>/cache``: a rerun
   trains nothing.
2. **Students**: a 2-layer width-128 BERT built from a config, with the MiniLM tokenizer
   at 64 tokens, trained by :func:`raykd.train.loop.run_student` (one Ray task, one
   thread per run) as ``none`` (labels only), ``kd`` (T = 2, alpha = 0.5) and ``wkd``
   (W = 0.75, same T and alpha). Seed k is the same for every row (paired): the
   difference ``row_a - row_b`` is computed per seed, then its mean and sd are reported.
   Each run keeps its best-validation epoch.

Every number is on the test split: accuracy and macro-F1
(:func:`raykd.metrics.classification.macro_f1`); mean ± sd (sample sd, ddof = 1) over
seeds. ``--quick`` uses tiny random BERTs (2 layers, width 32) on 160 articles at 32
tokens and 2 seeds: a smoke check of the wiring, not a result.

Outputs in ``out``: ``text_quality.md`` and ``text_quality.json`` (every run per seed);
with ``results`` they are copied there too.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from raykd.bench.quality import check_seeds
from raykd.bench.quality_runs import Row, RunData, RunJob, fit_best
from raykd.bench.text_plan import TextPlan, _config_bert, _minilm
from raykd.bench.text_report import paired, quality_markdown, spread
from raykd.core.spec import ModelSpec, parse_spec
from raykd.engine import Job, ensure_ray, load_data, put_splits, run_teachers
from raykd.losses.topk import dense
from raykd.metrics.classification import macro_f1
from raykd.teachers.cache import LogitCache
from raykd.train.steps import accuracy, predict_logits

Log = Callable[[str], None]
ROWS: tuple[Row, ...] = (Row("none", "none"), Row("kd", "kd"), Row("wkd W=0.75", "wkd", 0.75))
"""The student rows, in table order."""
PAIRS: tuple[tuple[str, str], ...] = (("kd", "none"), ("wkd W=0.75", "none"),
                                      ("wkd W=0.75", "kd"))
"""Paired differences reported: (a, b) gives a - b per seed."""
SPANS_NOTE = ("in `span_quality.md` (`raykd bench quality --text --text-scenario bbc-speakers`): "
              "SQuAD v2.0 EM/F1 of the same rows.")


FULL_PLAN = TextPlan(
    teachers=(_minilm(6, 64), _minilm(4, 64), _minilm(3, 64)),
    teacher_train={"epochs": 1, "batch_size": 16, "lr": 1e-4, "schedule": "linear",
                   "warmup_fraction": 0.1},
    student=_config_bert(128, 2, 2, 64),
    train={"epochs": 4, "batch_size": 32, "lr": 5e-4, "schedule": "linear",
           "warmup_fraction": 0.1, "weight_decay": 0.0},
    seeds=3,
)
"""The full run: every BBC article, the packaged MiniLM, the README's student."""

QUICK_PLAN = TextPlan(
    teachers=tuple(_config_bert(32, 2, 2, 32) for _ in range(3)),
    teacher_train={"epochs": 3, "batch_size": 16, "lr": 3e-3, "schedule": "linear",
                   "warmup_fraction": 0.1},
    student={**_config_bert(32, 1, 2, 32)},
    train={"epochs": 2, "batch_size": 16, "lr": 3e-3, "weight_decay": 0.0},
    seeds=2,
    train_limit=160,
)
"""``--quick``: tiny random BERTs on 160 articles (a smoke check)."""


def teacher_spec(plan: TextPlan, out: Path) -> Any:
    """The job spec whose teacher stage trains and caches the plan's teachers."""
    return parse_spec({
        "name": plan.name,
        "data": {"dataset": plan.dataset, "val_fraction": plan.val_fraction,
                 "test_fraction": plan.test_fraction, "seed": 0, "train_limit": plan.train_limit,
                 **(plan.windows or {})},
        "teachers": [{"model": m, "seed": s}
                     for m, s in zip(plan.teachers, plan.teacher_seeds, strict=True)],
        "teacher_train": plan.teacher_train,
        "student": {"model": plan.student},
        "methods": [{"method": "kd"}],
        "storage": str(out),
    })


@dataclass
class Teachers:
    """The loaded data (in the object store) and the teachers' results and train logits."""

    data: Any
    refs: dict[str, Any]
    logits_ref: Any
    summary: dict[str, Any]


def teachers_dir(plan: TextPlan, out: Path, *, quick: bool) -> Path:
    """The teachers' job directory of a plan: ``<out>/<plan name>-quick-teachers`` or
    ``-full-teachers``, so that ``--quick`` and the full run in one ``out`` never share it (their
    data differ, and a job directory holds one data fingerprint)."""
    return out / f"{plan.name}-{'quick' if quick else 'full'}-teachers"


def prepare_teachers(plan: TextPlan, out: Path, log: Log, *, quick: bool) -> Teachers:
    """Load the data, train the teachers (or reuse them from ``out/cache``), summarize them;
    the teachers' job directory is :func:`teachers_dir`."""
    import ray

    start = time.perf_counter()
    job = Job(spec=teacher_spec(plan, out), job_dir=teachers_dir(plan, out, quick=quick),
              log=lambda line: log(f"teachers: {line}"))
    data = load_data(job)
    log(f"{plan.dataset}: train {len(data.train)} / val {len(data.val)} / test {len(data.test)}")
    refs = put_splits(data)
    logits = run_teachers(job, data, LogitCache(out / "cache"), refs).logits
    rows = job.result["teachers"]
    summary = {
        "models": list(plan.teachers), "seeds": list(plan.teacher_seeds),
        "train": plan.teacher_train,
        "rows": [{k: r[k] for k in ("index", "checkpoint", "trained_by_raykd", "train_seconds",
                                    "val_accuracy", "test_accuracy", "test_macro_f1", "span")
                  if k in r} for r in rows],
        "ensemble": job.result["ensemble"],
        "logit_cache": {s: {k: v for k, v in st.items() if k != "cache_keys"}
                        for s, st in job.result["logit_cache"]["teacher"].items()},
        "seconds": time.perf_counter() - start,
    }
    return Teachers(data=data, refs=refs, logits_ref=ray.put(dense(logits["train"])),
                    summary=summary)


def student_run(job: RunJob, params: Mapping[str, float], data: RunData,
                teacher: np.ndarray | None) -> dict[str, Any]:
    """Train one student (best-validation epoch kept) and score it on test."""
    start = time.perf_counter()
    best, history = fit_best(job, params, data, teacher)
    test = predict_logits(best.model, data.x_test)
    return {
        "row": job.row.name, "seed": job.seed, "params": dict(params), "best_epoch": best.epoch,
        "val_accuracy": best.val_accuracy, "test_accuracy": accuracy(test, data.y_test),
        "test_macro_f1": macro_f1(test.argmax(-1), data.y_test, job.num_classes),
        "checkpoint": job.checkpoint, "seconds": time.perf_counter() - start,
        "history": history,
    }


def _remote_run(fn: Callable[..., dict[str, Any]]) -> Any:
    """``fn(job, params, RunData, teacher, *extra)`` as a one-CPU Ray task."""
    import ray

    @ray.remote(num_cpus=1, max_retries=0)
    def run(job: RunJob, params: dict[str, float], x_train: np.ndarray, y_train: np.ndarray,
            x_val: np.ndarray, y_val: np.ndarray, x_test: np.ndarray, y_test: np.ndarray,
            teacher: np.ndarray | None, *extra: Any) -> dict[str, Any]:
        data = RunData(x_train, y_train, x_val, y_val, x_test, y_test)
        return fn(job, params, data, teacher, *extra)

    return run


def submit_students(plan: TextPlan, teachers: Teachers, seeds: int, out: Path, *,
                    fn: Callable[..., dict[str, Any]] = student_run, scenario: str = "text",
                    folder: str = "checkpoints", extra: tuple[Any, ...] = ()) -> list[Any]:
    """One Ray task ``fn`` per (row, seed); every row shares seed k (paired). ``extra``:
    further arguments of ``fn`` (object refs); checkpoints under ``out/<folder>``."""
    run = _remote_run(fn)
    data = teachers.data
    student = ModelSpec.model_validate(plan.student).model_dump()
    splits = [teachers.refs[k] for k in ("x_train", "y_train", "x_val", "y_val", "x_test",
                                         "y_test")]
    params = {"temperature": plan.temperature, "alpha": plan.alpha}
    refs = []
    for seed in range(seeds):  # seed-major: a partial table still pairs
        for row in ROWS:
            job = RunJob(dataset=plan.dataset, scenario=scenario, row=row, seed=seed,
                         student=student, input_shape=tuple(data.input_shape),
                         num_classes=data.num_classes, train=plan.train,
                         checkpoint=str(out / folder / row.slug / f"seed{seed}.safetensors"))
            teacher = None if row.method == "none" else teachers.logits_ref
            refs.append(run.remote(job, params if row.tuned else {}, *splits, teacher, *extra))
    return refs


def summarize_rows(runs: list[dict[str, Any]],
                   metrics: tuple[str, ...] = ("test_accuracy", "test_macro_f1")) -> dict[str, Any]:
    """Per row mean ± sd of each of ``metrics``; the paired differences of :data:`PAIRS`."""
    by_row = {r.name: sorted((x for x in runs if x["row"] == r.name), key=lambda x: x["seed"])
              for r in ROWS}
    rows = {name: {m: spread([x[m] for x in got]) for m in metrics}
            for name, got in by_row.items()}
    diffs = {f"{a} - {b}": {m: paired({x["seed"]: x[m] for x in by_row[a]},
                                      {x["seed"]: x[m] for x in by_row[b]})
                            for m in metrics}
             for a, b in PAIRS}
    return {"rows": rows, "differences": diffs}


@dataclass(frozen=True)
class Bench:
    """How one text scenario submits its students and reports them.

    Attributes:
        stem: The outputs' name (``<stem>.md``, ``<stem>.json``).
        submit: ``(plan, teachers, seeds, out) -> refs`` of the student runs.
        metrics: The run keys summarized per row and differenced per seed.
        said: A run's log line.
        markdown: The result's Markdown.
    """

    stem: str
    submit: Callable[[TextPlan, Teachers, int, Path], list[Any]]
    metrics: tuple[str, ...]
    said: Callable[[dict[str, Any]], str]
    markdown: Callable[[dict[str, Any]], str]


def run_bench(bench: Bench, plan: TextPlan, out: Path, *, quick: bool, seeds: int, log: Log,
              results: Path | None, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Teachers (trained once, reused), then ``seeds`` x :data:`ROWS` students; the outputs."""
    import ray

    out.mkdir(parents=True, exist_ok=True)
    start, stamp = time.perf_counter(), datetime.now(UTC).isoformat(timespec="seconds")
    load_start = os.getloadavg()[0]
    with ray_up():
        teachers = prepare_teachers(plan, out, log, quick=quick)
        log(f"teachers ready in {teachers.summary['seconds']:.0f} s; {seeds} seeds x "
            f"{len(ROWS)} students")
        runs = []
        for ref in bench.submit(plan, teachers, seeds, out):
            runs.append(ray.get(ref))
            log(f"{runs[-1]['row']} seed {runs[-1]['seed']}: {bench.said(runs[-1])} "
                f"({runs[-1]['seconds']:.0f} s)")
    data = teachers.data
    result: dict[str, Any] = {
        "quick": quick, "seeds": seeds, "plan": asdict(plan), "started": stamp,
        "data": {"train": len(data.train), "val": len(data.val), "test": len(data.test),
                 "num_classes": data.num_classes, "class_names": list(data.class_names or [])},
        "teachers": teachers.summary, "runs": runs,
        "summary": summarize_rows(runs, bench.metrics), **(extra or {}),
        "wall_seconds": time.perf_counter() - start,
        "load": {"start": load_start, "end": os.getloadavg()[0], "cpus": os.cpu_count()},
    }
    write_outputs(result, out, results, bench.stem, bench.markdown(result))
    log(f"wrote {out / bench.stem}.md in {result['wall_seconds'] / 60:.1f} min")
    return result


TEXT_BENCH = Bench(
    stem="text_quality", submit=submit_students,
    metrics=("test_accuracy", "test_macro_f1"),
    said=lambda r: f"test accuracy {r['test_accuracy']:.4f} macro-F1 {r['test_macro_f1']:.4f}",
    markdown=quality_markdown)


def run_text_quality(out: Path, quick: bool = False, seeds: int | None = None, *,
                     results: Path | None = None, plan: TextPlan | None = None,
                     log: Log | None = None) -> dict[str, Any]:
    """Run the text scenario; write ``text_quality.md`` and ``.json`` to ``out`` (and ``results``).

    Returns:
        The content of ``text_quality.json``.
    """
    seeds = check_seeds(seeds, advice="3 or more for the table")
    log = log or (lambda line: print(f"raykd bench quality --text: {line}", flush=True))
    plan = plan or (QUICK_PLAN if quick else FULL_PLAN)
    return run_bench(TEXT_BENCH, plan, Path(out), quick=quick, seeds=seeds or plan.seeds,
                     log=log, results=results, extra={"spans": SPANS_NOTE})


@contextmanager
def ray_up() -> Iterator[None]:
    """Ray for a bench: started here and shut down after, unless it was running already."""
    import ray

    started = not ray.is_initialized()
    ensure_ray()
    try:
        yield
    finally:
        if started:
            ray.shutdown()


def write_outputs(result: dict[str, Any], out: Path, results: Path | None, stem: str,
                  markdown: str) -> None:
    """``<stem>.json`` and ``<stem>.md`` in ``out``, copied to ``results`` when given."""
    (out / f"{stem}.json").write_text(json.dumps(result, indent=2, default=str))
    (out / f"{stem}.md").write_text(markdown)
    if results is not None:
        Path(results).mkdir(parents=True, exist_ok=True)
        for ext in ("json", "md"):
            shutil.copyfile(out / f"{stem}.{ext}", Path(results) / f"{stem}.{ext}")
