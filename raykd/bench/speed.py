"""``raykd bench speed``: raykd's throughput against the student alone and a plain KD loop.

One run, side by side on full MNIST, the same models (3 CNN width-8 teachers and a CNN
width-8 student, as in the ``mnist-wkd`` demo), batch 128, the same number of steps:

- (a) the student alone, plain PyTorch in one process: the physical limit of distillation;
- (p) plain PyTorch KD on cached logits gathered by index: the hand-written yardstick of
  distillation from frozen teachers (logits computed once, a tensor indexed per batch);
- (b) plain PyTorch KD: the 3 teachers forward (no_grad) on every batch, then the student;
- (c) raykd, cached teacher logits, the job's student actor with 2 CPUs (the default
  runner for one worker); (ct) the same on a 1-worker Ray Train fit;
- (d) raykd online: augmentation on, the teachers serve logits one step ahead in the
  student actor's process (a thread each side); (da) the same served by one ensemble
  actor (``scaling.online_teachers: actors``);
- (e) raykd cached with 1 worker x 1 CPU (student actor) and with 2 Ray Train workers x 1
  CPU (DDP over gloo);
- (c0) a diagnostic: raykd's own loop (``run_student``), cached logits, no Ray.

Throughput is steady state: ``steps * batch / time of the timed steps``, after a warm-up
(plain rows: ``warmup_steps`` untimed steps; Ray rows and (c0): one untimed first epoch,
the workers' own history); start-up is the rest of the row's wall time (Ray Train worker
group, imports, data, warm-up, validation, teardown). Every row is measured in
``--rounds`` interleaved rounds (:func:`~raykd.bench.speed_plan.round_schedule`: rows
rotated each round, the Ray group and the plain group swapping places, Ray started for
the Ray group and shut down for the plain one); a row reports the median of its rounds
with their min-max and quartiles, and every ratio is one of medians. Teachers are trained
once (or reused from ``<out>/cache/teachers``) and their logit cache built once; both are
reported apart.

On a shared machine the timings move: torch's OpenMP threads spin while they wait, so
a 2-thread row slows down several times as soon as anything else runs. Every row
records the share of the CPU other processes took ("other CPU"), and
``python -m raykd.bench.speed --rows a,b`` re-measures disturbed rows into the report.

After the rows, the small-job section (:mod:`raykd.bench.speed_small`, ``--rows small``
alone): a 3,000-row tabular job whose time is all fixed costs, against its plain loop.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from raykd.bench import BenchOptionError
from raykd.bench.monitor import RowMonitor
from raykd.bench.monitor import ray_for as _ray_for
from raykd.bench.plain import PlainRun, run_plain_subprocess
from raykd.bench.speed_plan import (
    ALPHA,
    BATCH,
    LR,
    MODEL,
    PLAIN_LABELS,
    PLAIN_ROWS,
    RAY_ROWS,
    ROW_ORDER,
    TEMPERATURE,
    THREAD_ENV,
    Plan,
    RayRow,
    bench_spec,
    merge_rounds,
    plan_steps,
    round_schedule,
    spread,
)
from raykd.bench.speed_report import (
    TARGETS,
    check_targets,
    markdown,
    table_rows,
    write_report,
)
from raykd.bench.speed_small import small_section
from raykd.data import load_dataset
from raykd.engine import Job, ensure_ray, put_splits, run_job, run_teachers
from raykd.teachers.cache import LogitCache

__all__ = [
    "RAY_ROWS",
    "ROW_ORDER",
    "TARGETS",
    "Plan",
    "RayRow",
    "RowMonitor",
    "bench_spec",
    "check_targets",
    "markdown",
    "merge_rounds",
    "plan_steps",
    "round_schedule",
    "run_speed_bench",
    "spread",
    "table_rows",
    "write_report",
]


def setup_teachers(plan: Plan, out: Path, log: Any) -> dict[str, Any]:
    """Start Ray, train the teachers and build their logit cache, or reuse both.

    Returns ``checkpoints``, ``ray_init_seconds`` and what the one-off work cost; a
    rerun that reuses them reports the numbers recorded when they were built
    (``<out>/setup-<train_limit>.json``).
    """
    job = Job(spec=bench_spec(plan, out, checkpoints=None), job_dir=out / "setup", log=log)
    data = load_dataset("mnist", val_fraction=0.1, seed=0, train_limit=plan.train_limit)
    start = time.perf_counter()
    ensure_ray()
    ray_init = time.perf_counter() - start
    teachers = run_teachers(job, data, LogitCache(out / "cache"), put_splits(data))
    cache = job.result["logit_cache"]["teacher"].values()
    forward = sum(s["teacher_forward_examples"] for s in cache)
    trained = any(t["trained_by_raykd"] for t in job.result["teachers"])
    record = out / f"setup-{plan.train_limit or 'full'}.json"
    info = json.loads(record.read_text()) if record.exists() else {}
    now = datetime.now(UTC).isoformat()
    if trained:
        info.update(teacher_train_seconds=job.timer.stages["teacher_train"],
                    teachers_trained_at=now)
    if forward:
        info.update(cache_build_seconds=sum(s["seconds"] for s in cache), cache_built_at=now,
                    cache_forward_examples=forward)
    info.update(teacher_test_accuracy=[t["test_accuracy"] for t in job.result["teachers"]],
                ensemble_test_accuracy=job.result["ensemble"]["test_accuracy"])
    record.write_text(json.dumps(info, indent=2))
    return {**info, "checkpoints": teachers.checkpoints, "ray_init_seconds": ray_init,
            "teachers_reused": not trained, "cache_reused": not forward}


def run_ray_row(row: RayRow, plan: Plan, out: Path, checkpoints: list[str],
                log: Any) -> dict[str, Any]:
    """One raykd row: ``run_job`` with the setup's teachers; steady-state and start-up time.

    The job runs ``plan.epochs + 1`` epochs; the first is the untimed warm-up.
    """
    job_dir = out / "jobs" / row.key
    shutil.rmtree(job_dir, ignore_errors=True)
    with RowMonitor() as mem:
        spec = bench_spec(plan, out, checkpoints=checkpoints, row=row)
        result = run_job(spec, job_dir=job_dir, log=log)
    gen = result["students"][0]["generations"][0]
    epoch_s = sum(h["epoch_seconds"] for h in gen["history"][1:])
    return {
        "kind": "ray", "steps": plan.steps, "batch_size": BATCH, "epoch_seconds": epoch_s,
        "samples_per_s": plan.steps * BATCH / epoch_s, "wall_seconds": gen["seconds"],
        "startup_seconds": gen["seconds"] - epoch_s,
        "worker_group_start_seconds": gen.get("startup_seconds", float("nan")),
        "job_seconds": result["timings"]["total"], "timings": result["timings"],
        "val_accuracy": gen["val_accuracy"], "peak_mem_mb": mem.peak_workers_mb,
        "peak_mem_by_process": mem.peak_by_title, "head_mem_mb": mem.peak_head_mb,
        "num_workers": row.num_workers, "cpus_per_worker": row.cpus_per_worker,
        "augment": row.augment, "other_cpu_share": mem.other_share,
    }


def run_plain_row(key: str, plan: Plan, out: Path, checkpoints: list[str]) -> dict[str, Any]:
    """A plain row in a fresh process: (a) alone, (p) cached by index, (b) plain KD, (c0)."""
    teachers = () if key == "a" else tuple(checkpoints)
    loop = {"c0": "raykd", "p": "cached"}.get(key, "plain")
    run = PlainRun(dataset="mnist", student=MODEL, teachers=teachers, steps=plan.steps,
                   train_limit=plan.train_limit, batch_size=BATCH, lr=LR, temperature=TEMPERATURE,
                   alpha=ALPHA, threads=2, loop=loop,  # type: ignore[arg-type]
                   warmup_steps=plan.warmup_steps)
    with RowMonitor() as mon:
        res = run_plain_subprocess(run, workdir=out / "plain", name=key)
    return {**res, "kind": "plain", "peak_mem_mb": res["peak_rss_mb"],
            "other_cpu_share": mon.other_share}


def run_speed_bench(*, out: Path, quick: bool = False, steps: int | None = None,
                    rows: tuple[str, ...] | None = None, rounds: int | None = None,
                    log: Any = print) -> dict[str, Any]:
    """Run every row in interleaved rounds, print the table, write ``speed.md/json/png``.

    ``rows`` re-measures only those rows (e.g. ``("a", "b")`` when other processes
    disturbed them) and merges them into the ``speed.json`` already in ``out`` (without
    one, the report has just those rows).
    """
    import ray

    plan = plan_steps(quick=quick, steps=steps, rounds=rounds)
    out = Path(out).resolve()  # Ray's workers and actors get absolute checkpoint paths
    out.mkdir(parents=True, exist_ok=True)
    keys, previous = _rows_to_run(rows, out, plan)
    started_ray = not ray.is_initialized()
    start = time.perf_counter()
    log(f"bench speed: {plan.steps} steps x batch {BATCH} per row (+ warm-up), "
        f"{plan.rounds} rounds, rows {keys}, out {out}")
    ray_rows = {r.key: r for r in RAY_ROWS if r.key in keys}
    setup = previous["setup"] if previous and not ray_rows else setup_teachers(plan, out, log)
    checkpoints = setup["checkpoints"]
    schedule = round_schedule(tuple(ray_rows), tuple(k for k in PLAIN_ROWS if k in keys),
                              plan.rounds)
    by_row: dict[str, list[dict[str, Any]]] = {}
    for r, order in enumerate(schedule):
        for position, key in enumerate(order):
            ray_row = ray_rows.get(key)
            _ray_for(ray_row is not None, started_ray)
            log(f"round {r + 1}/{plan.rounds}, row ({key}): "
                f"{ray_row.label if ray_row else PLAIN_LABELS[key]}")
            fn = ((lambda rr=ray_row: run_ray_row(rr, plan, out, checkpoints, log)) if ray_row
                  else (lambda k=key: run_plain_row(k, plan, out, checkpoints)))
            by_row.setdefault(key, []).append(
                {"measured_at": datetime.now(UTC).isoformat(), "round": r,
                 "position": position, **_guard(fn)})
    small = (previous or {}).get("small")
    if rows is None or "small" in rows:
        small = small_section(plan.rounds, out, log, lambda on: _ray_for(on, started_ray))
    _ray_for(False, started_ray)
    labels = {**PLAIN_LABELS, **{k: r.label for k, r in ray_rows.items()}}
    measured = {k: {**merge_rounds(v), "label": labels[k]} for k, v in by_row.items()}
    merged = {**(previous or {}).get("rows", {}), **measured}
    remeasured = {*(previous or {}).get("remeasured", []), *(measured if rows else ())}
    report = {
        "created_at": datetime.now(UTC).isoformat(), "steps": plan.steps, "batch_size": BATCH,
        "epochs": plan.epochs, "train_limit": plan.train_limit, "quick": quick,
        "rounds": plan.rounds, "warmup_steps": plan.warmup_steps,
        "schedule": schedule,
        "cpus": os.cpu_count(), "env": {k: os.environ[k] for k in THREAD_ENV if k in os.environ},
        "setup": setup, "rows": {k: merged[k] for k in ROW_ORDER if k in merged},
        "remeasured": sorted(remeasured), "small": small,
        "bench_seconds": time.perf_counter() - start,
    }
    write_report(report, out)
    return report


def _rows_to_run(rows: tuple[str, ...] | None, out: Path,
                 plan: Plan) -> tuple[tuple[str, ...], dict[str, Any] | None]:
    """The row keys to measure and, for a partial rerun, the earlier report to merge into."""
    if not rows:
        return ROW_ORDER, None
    unknown = [k for k in rows if k not in (*ROW_ORDER, "small")]
    if unknown:
        raise BenchOptionError(
            f"--rows={','.join(rows)}: unknown {unknown}; accepted: {[*ROW_ORDER, 'small']}"
        )
    path = out / "speed.json"
    if not path.is_file():  # nothing to merge into: a report of just these rows
        return tuple(k for k in rows if k != "small"), None
    previous = _previous_report(path, rows)
    if previous["steps"] != plan.steps:
        raise BenchOptionError(
            f"--rows={','.join(rows)}: {path} has {previous['steps']} steps per row, this run "
            f"{plan.steps}; use the same --steps/--quick"
        )
    return tuple(k for k in rows if k != "small"), previous


def _previous_report(path: Path, rows: tuple[str, ...]) -> dict[str, Any]:
    """The ``speed.json`` a partial rerun merges into; BenchOptionError when it is unusable."""
    flag = f"--rows={','.join(rows)}"
    try:
        previous = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        reason = f"{flag}: {path} cannot be read ({err}); rerun the whole bench"
        raise BenchOptionError(reason) from None
    if not isinstance(previous, dict) or not isinstance(previous.get("steps"), int):
        raise BenchOptionError(
            f"{flag}: {path} is not a speed report (no integer 'steps'); rerun the whole bench"
        )
    return previous


def _guard(fn: Any) -> dict[str, Any]:
    """A failed row becomes an ``error`` entry; the other rows still run."""
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001 - reported in the table, not swallowed
        first = (str(exc).strip().splitlines() or [""])[0]
        return {"error": f"{type(exc).__name__}: {first}"}


def main(argv: list[str] | None = None) -> None:
    """``python -m raykd.bench.speed [--quick] [--steps N] [--rows a,b] [--out DIR]``."""
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("raykd-runs/bench-speed"))
    parser.add_argument("--quick", action="store_true", help="~100 steps per row.")
    parser.add_argument("--steps", type=int, default=None, help="Training steps per row.")
    parser.add_argument("--rows", default=None,
                        help=f"Re-measure only these rows ({','.join(ROW_ORDER)}, comma-separated) "
                             "and merge them into OUT/speed.json (a report of just these rows "
                             "when there is none).")
    parser.add_argument("--rounds", type=int, default=None,
                        help="Interleaved rounds per row (default 3, 2 with --quick).")
    ns = parser.parse_args(argv)
    rows = tuple(r.strip() for r in ns.rows.split(",") if r.strip()) if ns.rows else None
    run_speed_bench(out=ns.out, quick=ns.quick, steps=ns.steps, rows=rows, rounds=ns.rounds)


if __name__ == "__main__":
    main()
