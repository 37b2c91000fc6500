"""``raykd bench wkd``: where Weighted KD helps, and what W to set.

``raykd bench quality`` asked ROaD's question on ensembles of equal teachers (WKD = KD
within noise there). This bench asks the user's question: *when* does W matter? Per
dataset it builds two ensembles of three teachers,

- ``equal``: three teachers of the strong architecture (seeds 1, 2, 3);
- ``unequal``: the same strong teacher (seed 1) with a weak MLP and a linear model,

each taught by raykd's own teacher stage (:func:`raykd.engine.teacher_stage.run_teachers`: one
teacher pass per ensemble; teachers and their logits cached under ``<out>/cache``, the
shared strong teacher trained once). Every student run then reads that ensemble's frozen
(M, N, C) train logits from one object-store copy (:mod:`raykd.bench.quality_tasks`: a
``num_cpus=1`` Ray task per run, as a sweep trial reads its logits; no teacher runs again).

Per dataset, ensemble and student size (``same-size``: the strong architecture;
``smaller``: a small MLP) the rows of :data:`~raykd.bench.wkd_plan.WKD_ROWS` are trained
with the same seeds 0..n-1 (seed k: the same initialisation and batch order in every row,
so differences are paired), at one T and alpha for all (raykd's defaults, T = 4,
alpha = 0.9): the W curve (W = 1 is plain KD, then 0.75 ... 0.05), and two automatic
settings: ``teacher_weights: val_accuracy`` with KD and with WKD at its default W = 0.75. ``none``
(the student alone) is trained once per student and seed and shared by both ensembles. The
report adds "W picked on validation": per seed the W-curve run with the best validation
accuracy, its test accuracy reported (the same runs, no extra training).

Why: per ensemble, the share of training examples on which some but not all teachers are
wrong (the only examples where WKD changes the target) and the training-set accuracy of
each row's target (:func:`raykd.bench.wkd_stats.target_stats`).

Outputs in ``out``: ``wkd.md`` (tables and the statements), ``wkd.json`` (every number,
per seed), ``wkd_<dataset>.png`` (accuracy against W per scenario) and ``wkd_tracks.png``
(test gain over KD against the target's accuracy gain). ``--quick``: scikit-learn's digits,
3 seeds, a smoke check of a few minutes.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from raykd.bench.quality import check_seeds, disagreement, wait_all
from raykd.bench.quality_runs import Row, RunJob
from raykd.bench.quality_tasks import _run_task
from raykd.bench.wkd_plan import (
    CURVE_ROWS,
    FULL_PLANS,
    NONE_ROW,
    QUICK_PLANS,
    WKD_ROWS,
    Ensemble,
    WkdPlan,
)
from raykd.bench.wkd_report import write_all
from raykd.bench.wkd_stats import summarize_scenario, target_stats
from raykd.core.spec import parse_spec
from raykd.data import load_dataset
from raykd.engine import Job, ensure_ray, put_splits, run_teachers
from raykd.losses import accuracy_weights
from raykd.losses.topk import dense
from raykd.teachers.cache import LogitCache
from raykd.train.config import teacher_accuracy
from raykd.train.steps import accuracy

Log = Callable[[str], None]


@dataclass
class EnsembleLogits:
    """One ensemble's teacher pass: its logits per split and what the report says of them."""

    name: str
    logits: dict[str, np.ndarray]
    summary: dict[str, Any]


def ensemble_summary(ens: Ensemble, logits: dict[str, np.ndarray], data: Any, *,
                     temperature: float, checkpoints: list[str] | None = None) -> dict[str, Any]:
    """Teachers' accuracies, their val-accuracy weights, disagreement and each row's target."""
    val_acc = teacher_accuracy(logits["val"], data.val.y)
    weights = accuracy_weights(val_acc, num_classes=data.num_classes).tolist()
    targets = {}
    for row in WKD_ROWS:
        q = weights if row.teacher_weights == "val_accuracy" else None
        targets[row.name] = target_stats(logits["train"], data.train.y, method=row.method,
                                         incorrect_weight=row.incorrect_weight,
                                         teacher_weights=q, temperature=temperature)
    return {
        "teachers": [{"model": m, "seed": s} for m, s in ens.teachers],
        "checkpoints": checkpoints or [],
        "val_accuracy": list(val_acc),
        "test_accuracy": [accuracy(z, data.test.y) for z in logits["test"]],
        "val_accuracy_weights": weights,
        "ensemble_val_accuracy": accuracy(logits["val"].mean(0), data.val.y),
        "ensemble_test_accuracy": accuracy(logits["test"].mean(0), data.test.y),
        "disagreement": {"train": disagreement(logits["train"], data.train.y),
                         "test": disagreement(logits["test"], data.test.y)},
        "targets": targets,
    }


def _teacher_spec(plan: WkdPlan, ens: Ensemble, out: Path) -> Any:
    return parse_spec({
        "name": f"bench-wkd-{plan.dataset}-{ens.name}",
        "data": {"dataset": plan.dataset, "val_fraction": plan.val_fraction,
                 "test_fraction": plan.test_fraction, "seed": 0, "train_limit": plan.train_limit},
        "teachers": [{"model": m, "seed": s} for m, s in ens.teachers],
        "teacher_train": plan.teacher_train,
        "student": {"model": plan.students[0][1]},
        "methods": [{"method": "kd"}],
        "storage": str(out),
    })


def teacher_pass(plan: WkdPlan, ens: Ensemble, data: Any, refs: dict[str, Any], out: Path,
                 log: Log) -> EnsembleLogits:
    """raykd's teacher stage for one ensemble (trained or cached), its logits and summary."""
    job_dir = out / "teachers" / plan.dataset / ens.name
    job = Job(spec=_teacher_spec(plan, ens, out), job_dir=job_dir,
              log=lambda line: log(f"{plan.dataset}/{ens.name}: {line}"))

    got = run_teachers(job, data, LogitCache(out / "cache"), refs).logits
    logits = {split: dense(z) for split, z in got.items()}
    checkpoints = [t["checkpoint"] for t in job.result["teachers"]]
    summary = ensemble_summary(ens, logits, data, temperature=plan.temperature,
                               checkpoints=checkpoints)
    return EnsembleLogits(ens.name, logits, summary)


def run_job(plan: WkdPlan, data: Any, ens: str | None, student: tuple[str, dict[str, Any]],
            row: Row, seed: int, out: Path, accuracy_of: tuple[float, ...] | None) -> RunJob:
    """One student run; ``ens`` None for ``none`` (shared by the ensembles)."""
    name, model = student
    where = out / "checkpoints" / plan.dataset / (ens or "no-teachers") / name / row.slug
    return RunJob(dataset=plan.dataset, scenario=f"{ens or '-'}/{name}", row=row, seed=seed,
                  student=model, input_shape=tuple(data.input_shape),
                  num_classes=data.num_classes, train=plan.train,
                  checkpoint=str(where / f"seed{seed}.safetensors"),
                  teacher_accuracy=accuracy_of if row.teacher_weights != "uniform" else None)


Launch = Callable[[RunJob, dict[str, float], Any], Any]
"""``launch(job, params, teacher_key)`` starts one run; the handle resolves to its result."""


def submit_dataset(plan: WkdPlan, data: Any, teachers: list[EnsembleLogits], seeds: int,
                   out: Path, launch: Launch) -> dict[str, Any]:
    """Every run of one dataset; ``{"none": {student: [handle]}, ens: {student: {row: [..]}}}``."""
    params = {"temperature": plan.temperature, "alpha": plan.alpha}
    handles: dict[str, Any] = {"none": {}}
    for student in plan.students:
        handles["none"][student[0]] = [
            launch(run_job(plan, data, None, student, NONE_ROW, s, out, None), {}, None)
            for s in range(seeds)
        ]
    for ens in teachers:
        acc = tuple(ens.summary["val_accuracy"])
        handles[ens.name] = {
            student[0]: {
                row.name: [launch(run_job(plan, data, ens.name, student, row, s, out, acc),
                                  params, ens.name) for s in range(seeds)]
                for row in WKD_ROWS
            }
            for student in plan.students
        }
    return handles


def assemble_dataset(plan: WkdPlan, data: Any, teachers: list[EnsembleLogits],
                     handles: dict[str, Any], resolve: Callable[[Any], Any],
                     seeds: int) -> dict[str, Any]:
    """One dataset's section of ``wkd.json`` (every run finished)."""
    def runs(h: Any) -> list[dict[str, Any]]:  # per-epoch histories stay in the checkpoints' dirs
        return [{k: v for k, v in r.items() if k != "history"} for r in resolve(h)]

    nones = {name: runs(h) for name, h in handles["none"].items()}
    scenarios = {}
    for ens in teachers:
        for student, model in plan.students:
            finals = {"none": nones[student],
                      **{row: runs(h) for row, h in handles[ens.name][student].items()}}
            scenarios[f"{ens.name}/{student}"] = {
                "ensemble": ens.name, "student": student, "student_model": model,
                "finals": finals, "summary": summarize_scenario(finals, CURVE_ROWS),
            }
    return {
        "data": {"train": len(data.train), "val": len(data.val), "test": len(data.test),
                 "num_classes": data.num_classes, "input_shape": list(data.input_shape),
                 "fingerprints": {s: getattr(data, s).fingerprint
                                  for s in ("train", "val", "test")}},
        "plan": asdict(plan), "seeds": seeds,
        "rows": {r.name: {"method": r.method, "incorrect_weight": r.incorrect_weight,
                          "teacher_weights": r.teacher_weights} for r in (NONE_ROW, *WKD_ROWS)},
        "curve": list(CURVE_ROWS),
        "ensembles": {e.name: e.summary for e in teachers},
        "scenarios": scenarios, "plot": f"wkd_{plan.dataset}.png",
    }


def _ray_launcher(refs: dict[str, Any], teacher_refs: dict[str, Any]) -> Launch:
    splits = [refs[k] for k in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")]

    def launch(job: RunJob, params: dict[str, float], key: Any) -> Any:
        source = None if key is None else teacher_refs[key]
        return _run_task.remote(job, {"params": params}, *splits, source, None)  # type: ignore[call-arg]

    return launch


def _load(plan: WkdPlan) -> Any:
    return load_dataset(plan.dataset, val_fraction=plan.val_fraction,
                        test_fraction=plan.test_fraction, seed=0, train_limit=plan.train_limit)


def run_datasets(plans: tuple[WkdPlan, ...], seeds: int | None, out: Path,
                 log: Log) -> dict[str, Any]:
    """Teacher passes of every dataset first, then all student runs at once; their sections."""
    import ray

    started_ray = not ray.is_initialized()
    ensure_ray()
    try:
        staged = []
        for plan in plans:
            data = _load(plan)
            log(f"{plan.dataset}: train {len(data.train)} / val {len(data.val)} / "
                f"test {len(data.test)}, {data.num_classes} classes")
            refs = put_splits(data)
            teachers = [teacher_pass(plan, e, data, refs, out, log) for e in plan.ensembles]
            for e in teachers:
                s = e.summary
                log(f"{plan.dataset}/{e.name}: teachers test "
                    + ", ".join(f"{a:.4f}" for a in s["test_accuracy"])
                    + f", ensemble {s['ensemble_test_accuracy']:.4f}, some-but-not-all wrong on "
                    f"{100 * s['disagreement']['train']['some_wrong']:.1f}% of train")
            teacher_refs = {e.name: ray.put(e.logits["train"]) for e in teachers}
            n = seeds or plan.seeds
            handles = submit_dataset(plan, data, teachers, n, out,
                                     _ray_launcher(refs, teacher_refs))
            staged.append((plan, data, teachers, handles, n))
        wait_all(_all_handles([h for *_, h, _ in staged]), log)
        return {plan.dataset: assemble_dataset(plan, data, teachers, handles, ray.get, n)
                for plan, data, teachers, handles, n in staged}
    finally:
        if started_ray:
            ray.shutdown()


def _all_handles(tree: Any) -> list[Any]:
    if isinstance(tree, dict):
        return [h for v in tree.values() for h in _all_handles(v)]
    if isinstance(tree, list):
        return [h for v in tree for h in _all_handles(v)]
    return [tree]


def run_wkd_bench(out: Path, quick: bool = False, seeds: int | None = None, *,
                  results: Path | None = None, plans: tuple[WkdPlan, ...] | None = None,
                  log: Log | None = None) -> dict[str, Any]:
    """Run the bench; write ``wkd.md``, ``wkd.json`` and the charts to ``out``.

    Args:
        out: Output directory (created); ``<out>/cache`` keeps teachers and logits for reruns.
        quick: The smoke-check size (:data:`~raykd.bench.wkd_plan.QUICK_PLANS`).
        seeds: Student seeds per row, overriding each plan's number.
        results: Also copy the tables, JSON and charts here (``raykd/bench/results``).
        plans: Datasets to run instead of the default ones.
        log: Where progress lines go (default: print).

    Returns:
        The content of ``wkd.json``.
    """
    seeds, out = check_seeds(seeds, minimum=2, advice="paired tests need two; 6 or more "
                             "for the table"), Path(out)
    say = log or (lambda line: print(f"raykd bench wkd: {line}", flush=True))
    out.mkdir(parents=True, exist_ok=True)
    start, stamp = time.perf_counter(), datetime.now(UTC).isoformat(timespec="seconds")
    datasets = run_datasets(plans or (QUICK_PLANS if quick else FULL_PLANS), seeds, out, say)
    command = "raykd bench wkd" + (" --quick" if quick else "") + (
        f" --seeds {seeds}" if seeds else "") + (f" --results {results}" if results else "")
    result: dict[str, Any] = {"quick": quick, "started": stamp,
                              "wall_seconds": time.perf_counter() - start,
                              "command": command, "datasets": datasets}
    written = write_all(result, out)
    if results is not None:
        Path(results).mkdir(parents=True, exist_ok=True)
        for path in written:
            shutil.copyfile(path, Path(results) / path.name)
    say(f"wrote {out / 'wkd.md'}, wkd.json and the charts in {result['wall_seconds'] / 60:.1f} min")
    return result
