"""``raykd bench quality --text --text-scenario bbc-speakers``: KD and WKD on span extraction,
scored by SQuAD v2.0.

The scenario: ``bbc-speakers`` (quote/speaker questions built from the BBC articles, a third
unanswerable; split by article with seed 0: 1,033 / 148 / 295 questions), cut into windows of
ONE tokenizer, MiniLM's, that every model reads (``max_length`` 192 tokens, ``doc_stride``
64, questions cut to 32 tokens).

1. **Teachers**: two MiniLM-L6 models (the packaged all-MiniLM-L6-v2, 6 and 4 of its layers,
   seeds 1, 2) given a fresh start/end head and fine-tuned by raykd's teacher stage (the
   same :func:`raykd.bench.text_quality.prepare_teachers` as the BBC News scenario: trained
   once, kept under ``<out>/cache/teachers``, their span logits cached under
   ``<out>/cache``: a rerun trains nothing).
2. **Students**: a 2-layer width-128 BERT built from a config, reading the same windows,
   trained by :func:`raykd.train.loop.run_student` (one Ray task, one thread per run) as
   ``none``, ``kd`` (T = 2, alpha = 0.5) and ``wkd`` (W = 0.75), every softmax masked to the
   window's context tokens and the no-answer position. Seed k is shared by every row
   (paired). Each run keeps the epoch with the best validation SQuAD F1 (the loop's rule for
   span data: every epoch is scored per question on val).

Scores: SQuAD v2.0 exact match and F1 over the test questions (the best span over a
question's windows; answered "" when its null margin exceeds the threshold chosen on
validation for max F1; :func:`raykd.metrics.squad.span_row`), with the HasAns F1 and NoAns
accuracy; in percent, mean ± sd (ddof = 1) over seeds, and the paired differences.

Sizes of the full run (:data:`FULL_PLAN`, sized to finish in ~30 min on 2 CPUs shared with
other work): 400 of the 1,033 training questions (drawn by seed 0; ~1,150 windows) and every
val/test question, teachers 1 epoch (batch 16, AdamW lr 2e-4, linear warm-up 0.1), students
6 epochs (batch 32, lr 5e-4, linear warm-up 0.1), 3 seeds. Measured before sizing it
(2026-12-07, 1 torch thread, near-idle machine): a MiniLM-L6 training step on 16 windows of
176 tokens 2.9 s (4 layers 2.3 s), its forward pass 65 ms per window (4 layers 42 ms); so
~7 min of teachers and ~4 min of students when idle. Measured (2026-12-07, load average
19 falling to 6 from other work): 58 min, teachers 23 min.

``--quick``: tiny random BERTs (2 layers, width 32) on 100 training questions in windows of
128 tokens, 2 seeds: a smoke check of the wiring, not a result.

Outputs in ``out``: ``span_quality.md`` and ``span_quality.json`` (every run per seed);
with ``results`` they are copied there too.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from raykd.bench import BenchOptionError
from raykd.bench.quality import check_seeds
from raykd.bench.quality_runs import RunData, RunJob, loop_config
from raykd.bench.text_plan import TextPlan, _config_bert, _minilm
from raykd.bench.text_quality import (
    Bench,
    Log,
    Teachers,
    run_bench,
    run_text_quality,
    submit_students,
)
from raykd.bench.text_report import span_markdown
from raykd.metrics.squad import span_row
from raykd.models import save_checkpoint
from raykd.train.loop import LoopData, run_student
from raykd.train.steps import predict_logits

WINDOWS = {"max_length": 192, "doc_stride": 64, "max_query_length": 32}
"""The full run's windows (tokens per window, context overlap, question cut)."""
QUICK_WINDOWS = {"max_length": 128, "doc_stride": 16, "max_query_length": 24}
METRICS = ("test_exact", "test_f1", "test_HasAns_f1", "test_NoAns_f1")
"""The run keys summarized per row (percent); NoAns F1 is its exact match (answered '')."""

FULL_PLAN = TextPlan(
    teachers=(_minilm(6, 192), _minilm(4, 192)),
    teacher_seeds=(1, 2),
    teacher_train={"epochs": 1, "batch_size": 16, "lr": 2e-4, "schedule": "linear",
                   "warmup_fraction": 0.1},
    student=_config_bert(128, 2, 2, 192),
    train={"epochs": 6, "batch_size": 32, "lr": 5e-4, "schedule": "linear",
           "warmup_fraction": 0.1, "weight_decay": 0.0},
    seeds=3, train_limit=400, dataset="bbc-speakers", windows=WINDOWS,
    name="bench-span-quality",
)
"""The full run: MiniLM-L6 teachers (6 and 4 layers), the README's student, 192-token windows."""

QUICK_PLAN = TextPlan(
    teachers=(_config_bert(32, 2, 2, 128), _config_bert(32, 2, 2, 128)),
    teacher_seeds=(1, 2),
    teacher_train={"epochs": 2, "batch_size": 16, "lr": 3e-3},
    student=_config_bert(32, 1, 2, 128),
    train={"epochs": 2, "batch_size": 16, "lr": 3e-3, "weight_decay": 0.0},
    seeds=2, train_limit=100, dataset="bbc-speakers", windows=QUICK_WINDOWS,
    name="bench-span-quality",
)
"""``--quick``: tiny random BERTs on 100 training questions (a smoke check)."""


def span_run(job: RunJob, params: Mapping[str, float], data: RunData,
             teacher: np.ndarray | None, spans: Any) -> dict[str, Any]:
    """Train one span student (the epoch of the best val F1 kept), score it on test.

    ``spans`` is the data's :class:`raykd.data.span_prep.SpanPrep` (questions and windows).
    """
    start = time.perf_counter()
    config = replace(loop_config(job, params), span_val=spans.parts["val"])
    states: list[Any] = []
    history = run_student(config, LoopData(x_train=data.x_train, y_train=data.y_train,
                                           x_val=data.x_val, y_val=data.y_val,
                                           teacher_train=teacher),
                          report=lambda metrics, state: states.append(state))
    state = states[-1]
    model = state.model
    model.load_state_dict(state.best_weights)
    save_checkpoint(model, job.checkpoint, config=dict(job.student), input_shape=job.input_shape,
                    num_classes=job.num_classes,
                    extra={"row": job.row.name, "seed": job.seed,
                           "epoch": state.progress.best_epoch})
    row = span_row(predict_logits(model, data.x_val), predict_logits(model, data.x_test), spans)
    test = row["test"]
    return {
        "row": job.row.name, "seed": job.seed, "params": dict(params),
        "best_epoch": state.progress.best_epoch, "val_f1": row["val_f1"],
        "val_exact": row["val_exact"], "threshold": row["threshold"],
        **{f"test_{k}": test.get(k, float("nan")) for k in ("exact", "f1", "HasAns_f1",
                                                            "NoAns_f1")},
        "test": test, "checkpoint": job.checkpoint, "seconds": time.perf_counter() - start,
        "history": history,
    }


def submit_span_students(plan: TextPlan, teachers: Teachers, seeds: int,
                         out: Path) -> list[Any]:
    """:func:`span_run` per (row, seed), seed-major; every row shares seed k (paired)."""
    import ray

    return submit_students(plan, teachers, seeds, out, fn=span_run, scenario="spans",
                           folder="span-checkpoints", extra=(ray.put(teachers.data.spans),))


SPAN_BENCH = Bench(
    stem="span_quality", submit=submit_span_students, metrics=METRICS,
    said=lambda r: (f"test EM {r['test_exact']:.1f} F1 {r['test_f1']:.1f} (best epoch "
                    f"{r['best_epoch']}, val F1 {r['val_f1']:.1f})"),
    markdown=span_markdown)


def run_span_quality(out: Path, quick: bool = False, seeds: int | None = None, *,
                     results: Path | None = None, plan: TextPlan | None = None,
                     log: Log | None = None) -> dict[str, Any]:
    """Run the bbc-speakers scenario; write ``span_quality.md`` and ``.json`` to ``out`` (and
    ``results``). Returns the content of ``span_quality.json``."""
    seeds = check_seeds(seeds, advice="3 or more for the table")
    log = log or (lambda line: print(f"raykd bench quality --text (bbc-speakers): {line}",
                                     flush=True))
    plan = plan or (QUICK_PLAN if quick else FULL_PLAN)
    return run_bench(SPAN_BENCH, plan, Path(out), quick=quick, seeds=seeds or plan.seeds,
                     log=log, results=results)


TEXT_SCENARIOS = ("bbc-news", "bbc-speakers", "all")
"""``--text-scenario``: which text scenarios ``raykd bench quality --text`` runs."""


def run_text_scenarios(out: Path, quick: bool = False, seeds: int | None = None, *,
                       results: Path | None = None,
                       scenario: str = "bbc-news") -> list[dict[str, Any]]:
    """The chosen text scenarios in turn (BBC News first), sharing ``out`` and its caches."""
    if scenario not in TEXT_SCENARIOS:
        raise BenchOptionError(f"--text-scenario={scenario!r} is invalid; expected one of "
                               f"{', '.join(TEXT_SCENARIOS)}")
    done = []
    if scenario in ("bbc-news", "all"):
        done.append(run_text_quality(out, quick=quick, seeds=seeds, results=results))
    if scenario in ("bbc-speakers", "all"):
        done.append(run_span_quality(out, quick=quick, seeds=seeds, results=results))
    return done
