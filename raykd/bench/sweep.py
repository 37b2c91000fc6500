"""What sharing the teacher logits saves: one sweep run twice, shared and naive.

- shared: the teacher stage runs once (on a cold logit cache, so its forward passes are
  counted in), the train logits go into the object store once, trials read them;
- naive: no teacher stage; every trial rebuilds the teachers from their checkpoints and
  runs their forward passes over the train split itself.

Both runs use the same trained teachers (trained or taken from the cache beforehand, not
timed), the same trials and no final retraining; the wall time of each ``run_sweep``
call is compared, in interleaved rounds (medians with min-max), and each shared run's wall
is split into the teacher pass, the trials' own training and Tune's overhead
(:func:`tune_overhead`). Run it with::

    raykd bench sweep mnist-sweep --out raykd-runs/bench-sweep --results raykd/bench/results
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from raykd.core.jobdir import JobLayout
from raykd.core.spec import JobSpec, load_spec
from raykd.engine import Job, cache_dir, ensure_ray, load_data, put_splits, run_teachers
from raykd.teachers.cache import LogitCache
from raykd.tune.driver import run_sweep
from raykd.tune.space import check_sweep

Log = Callable[[str], None]


def trained_teachers(spec: JobSpec, out: Path, log: Log) -> list[str]:
    """Checkpoints of the spec's teachers, trained now unless the teacher cache has them."""
    job = Job(spec=spec, job_dir=out / "teachers", log=log)
    job.job_dir.mkdir(parents=True, exist_ok=True)
    data = load_data(job)
    ensure_ray()
    teachers = run_teachers(job, data, LogitCache(cache_dir(spec)), put_splits(data))
    return teachers.checkpoints


def bench_specs(spec: JobSpec, checkpoints: list[str], out: Path) -> JobSpec:
    """The spec both runs use: fixed teacher checkpoints, no retraining (each run then gets a
    cold logit cache, :func:`cold_cache`)."""
    data = json.loads(spec.model_dump_json())
    for teacher, path in zip(data["teachers"], checkpoints, strict=True):
        teacher["checkpoint"] = str(Path(path).resolve())
    data["sweep"]["final_retrain"] = False
    return JobSpec.model_validate(data)


def cold_cache(spec: JobSpec, out: Path) -> JobSpec:
    """``spec`` with an empty logit cache (``out/logits``, emptied now): every shared run
    computes its teacher pass, as the first sweep of a new dataset would."""
    cache = out / "logits"
    shutil.rmtree(cache, ignore_errors=True)
    return spec.model_copy(update={"cache": spec.cache.model_copy(update={"dir": str(cache)})})


def _timed(spec: JobSpec, job_dir: Path, *, naive: bool, log: Log) -> tuple[float, dict[str, Any]]:
    shutil.rmtree(job_dir, ignore_errors=True)  # a fresh sweep, never a resumed one
    start = time.perf_counter()
    result = run_sweep(spec, job_dir=job_dir, log=log, naive=naive)
    return time.perf_counter() - start, result


def _stage_times(job_dir: Path, stage: str) -> tuple[float, float] | None:
    """When ``stage`` started and finished (the last time it ran), from the job's events."""
    started = finished = None
    path = JobLayout(job_dir).events
    for line in path.read_text().splitlines() if path.is_file() else []:
        event = json.loads(line)
        if event.get("stage") == stage and event["type"] == "stage_started":
            started, finished = event["time"], None
        elif event.get("stage") == stage and event["type"] == "stage_finished":
            finished = event["time"]
    return None if started is None or finished is None else (started, finished)


def _trial_reports(job_dir: Path) -> list[dict[str, float]]:
    """Each trial's process id, start, end, training and time outside its epochs (Tune's
    result files: the trial reports ``trial_started_at`` and ``trial_seconds``)."""
    trials = []
    for path in sorted(JobLayout(job_dir).tune.glob("trial_*/result.json")):
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        if not rows or "trial_started_at" not in rows[0]:
            continue
        start, inside = rows[0]["trial_started_at"], rows[-1]["trial_seconds"]
        train = sum(r.get("epoch_seconds", 0.0) for r in rows)
        trials.append({"pid": rows[0]["pid"], "start": start, "end": start + inside,
                       "outside": inside - train})
    return sorted(trials, key=lambda t: t["start"])


def trial_timeline(job_dir: Path, at_once: int) -> dict[str, float]:
    """Tune's scheduling and the trials' time outside their epochs, placed on each trial
    process's timeline (Tune reuses one process per slot, ``reuse_actors``), each summed over
    the processes and divided by ``at_once`` as :func:`tune_overhead` divides:

    - ``process_start``: from the ``tune`` stage's start to each process's first trial (Ray
      places the trial actor, the process imports ray.tune, torch and raykd);
    - ``between_trials``: from a trial's end to the next one's start in the same process
      (Tune processes the result, resets the actor and starts the next trial);
    - ``after_last_trial``: from each process's last trial to the stage's end (an uneven
      last wave: one slot idles while the other finishes; Tune's shutdown);
    - ``first_trial_outside_epochs`` / ``later_trials_outside_epochs``: the first trial of
      each process (its first optimizer imports torch._dynamo, torch's first steps) and the
      others (validation, reports).

    Empty when the trials did not report their start or ran in more processes than slots.
    """
    stage, trials = _stage_times(job_dir, "tune"), _trial_reports(job_dir)
    pids = {t["pid"] for t in trials}
    if stage is None or not trials or len(pids) > at_once:
        return {}
    timeline = dict.fromkeys(("process_start", "between_trials", "after_last_trial",
                              "first_trial_outside_epochs", "later_trials_outside_epochs"), 0.0)
    timeline["process_start"] = (at_once - len(pids)) * (stage[1] - stage[0])  # idle slots
    for pid in pids:
        mine = [t for t in trials if t["pid"] == pid]
        timeline["process_start"] += mine[0]["start"] - stage[0]
        timeline["between_trials"] += sum(
            b["start"] - a["end"] for a, b in zip(mine, mine[1:], strict=False))
        timeline["after_last_trial"] += stage[1] - mine[-1]["end"]
        timeline["first_trial_outside_epochs"] += mine[0]["outside"]
        timeline["later_trials_outside_epochs"] += sum(t["outside"] for t in mine[1:])
    return {k: v / at_once for k, v in timeline.items()}


def tune_overhead(wall: float, result: dict[str, Any]) -> dict[str, float]:
    """Where a shared sweep's wall time went, and Tune's overhead.

    ``overhead = wall - teacher pass - training / at once``, where the teacher pass is the
    ``teacher_logits`` stage (one pass over train/val/test, or cache reads) and ``training``
    the trials' own training steps (the sum of their epochs' ``epoch_seconds``), divided by the
    trials run at once (the plan's concurrency, at most the number of trials). The overhead is
    then split into: the job's fixed start (``data``,
    ``ray_init``), what trials spend outside their epochs (validation, reading the shared
    logits, reports: ``trial_seconds - train_seconds``, divided as above), Tune's own scheduling
    (the ``tune`` stage less the trials' wall time, divided as above) and the rest (outputs);
    the scheduling and the trials' time outside their epochs are split further on the trial
    processes' timeline (:func:`trial_timeline`, when the job directory holds it).
    """
    trials, stages = result["trials"], result["timings"]
    # the trials that could run at once: the plan's slots, but never more than there are trials
    at_once = max(1, min(int(result["resources"]["concurrency"]), len(trials)))
    train = sum(t.get("train_seconds") or 0.0 for t in trials) / at_once
    inside = sum(t.get("trial_seconds") or 0.0 for t in trials) / at_once
    teacher = stages.get("teacher_logits", 0.0) + stages.get("teacher_start", 0.0)
    overhead = wall - teacher - train
    fixed = stages.get("data", 0.0) + stages.get("ray_init", 0.0)
    scheduling = stages.get("tune", 0.0) - inside
    return {
        "wall": wall, "teacher_pass": teacher, "training": train, "overhead": overhead,
        "overhead_share": overhead / wall if wall > 0 else float("nan"),
        "overhead_per_trial": overhead / max(1, len(trials)),
        "fixed_start": fixed, "in_trial_outside_epochs": inside - train,
        "tune_scheduling": scheduling,
        "rest": overhead - fixed - (inside - train) - scheduling,
        **trial_timeline(Path(result["job_dir"]), at_once),
    }


def _spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def run_sweep_bench(spec: JobSpec, *, out: Path, log: Log = print, rounds: int = 3,
                    results: Path | None = None, naive: bool = True) -> dict[str, Any]:
    """Time the sweep shared and naive in ``rounds`` interleaved rounds (the order alternates);
    write ``bench.json`` and ``bench.md`` under ``out`` (and copy them to ``results`` as
    ``sweep_bench.json``/``sweep_bench.md``) after every round: medians with min-max, the
    naive/shared ratio of the medians, and Tune's overhead (:func:`tune_overhead`) of every
    shared run. ``naive=False`` runs the shared sweep alone (Tune's overhead only; the naive
    sweep took 1.8-3.1x as long as the shared one) and names the files ``sweep_overhead.*`` in
    ``results``.

    Raises:
        SpecError: before any work, when the spec cannot be swept (no ``sweep:`` section,
            augmentation on, optuna missing).
    """
    check_sweep(spec)
    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    fixed = bench_specs(spec, trained_teachers(spec, out, log), out)
    runs: dict[str, list[float]] = {"shared": [], "naive": []}
    modes = ("shared", "naive") if naive else ("shared",)
    overheads: list[dict[str, float]] = []
    last: dict[str, dict[str, Any]] = {}
    loads: list[float] = []
    for r in range(max(1, rounds)):
        for mode in modes if r % 2 == 0 else modes[::-1]:
            loads.append(os.getloadavg()[0])
            seconds, result = _timed(cold_cache(fixed, out), out / mode, naive=mode == "naive",
                                     log=log)
            loads.append(os.getloadavg()[0])
            runs[mode].append(seconds)
            last[mode] = result
            if mode == "shared":
                overheads.append(tune_overhead(seconds, result))
            log(f"sweep bench round {r + 1}/{rounds}: {mode} {seconds:.1f} s")
        summary = _summary(spec, runs, overheads, last, loads)
        _write(summary, out, results)  # after every round: a bench stopped early keeps them
    share = summary["overhead"]["overhead_share"]["median"]
    versus = ("" if not naive else f", naive {summary['naive_seconds']['median']:.1f} s "
              f"(medians of {summary['rounds']}), ratio {summary['ratio']:.2f}x")
    log(f"sweep bench: shared {summary['shared_seconds']['median']:.1f} s{versus}; Tune's "
        f"overhead {100 * share:.0f}% of the shared wall")
    return summary


def _summary(spec: JobSpec, runs: dict[str, list[float]], overheads: list[dict[str, float]],
             last: dict[str, dict[str, Any]], loads: list[float]) -> dict[str, Any]:
    """``bench.json``'s content from the rounds run so far (the naive fields None when the
    naive sweep was not run)."""
    shared, naive = last["shared"], last.get("naive")
    return {
        "spec": spec.name,
        "trials": len(shared["trials"]),
        "dataset": shared["dataset"],
        "rounds": len(runs["shared"]),
        "shared_seconds": _spread(runs["shared"]),
        "naive_seconds": _spread(runs["naive"]) if runs["naive"] else None,
        "ratio": (statistics.median(runs["naive"]) / statistics.median(runs["shared"])
                  if runs["naive"] else None),
        "runs": runs,
        "overhead": {k: _spread([o[k] for o in overheads])
                     for k in overheads[0] if all(k in o for o in overheads)},
        "overhead_runs": overheads,
        "shared_timings": shared["timings"],
        "naive_timings": naive["timings"] if naive else None,
        "teacher_forward_examples": {
            "shared": sum(
                s["teacher_forward_examples"] for s in shared["logit_cache"]["teacher"].values()
            ),
            "naive": (sum(t["teacher_forward_examples"] for t in naive["trials"])
                      if naive else None),
        },
        "concurrency": shared["resources"]["concurrency"],
        "cpus": os.cpu_count(),
        "load_average_after": os.getloadavg(),
        "load_1min": {"min": min(loads), "max": max(loads)},  # at each run's start and end
    }


def _write(summary: dict[str, Any], out: Path, results: Path | None) -> None:
    """``bench.json`` and ``bench.md`` under ``out``, copied to ``results`` when given."""
    (out / "bench.json").write_text(json.dumps(summary, indent=2))
    (out / "bench.md").write_text(bench_table(summary))
    if results is not None:
        results.mkdir(parents=True, exist_ok=True)
        name = "sweep_bench" if summary["ratio"] is not None else "sweep_overhead"
        shutil.copyfile(out / "bench.json", results / f"{name}.json")
        shutil.copyfile(out / "bench.md", results / f"{name}.md")


def _cell(stat: dict[str, float], digits: int = 1, scale: float = 1.0) -> str:
    return (f"{scale * stat['median']:.{digits}f} ({scale * stat['min']:.{digits}f}-"
            f"{scale * stat['max']:.{digits}f})")


OVERHEAD_ROWS = (
    ("wall", "shared sweep, wall"),
    ("teacher_pass", "one teacher pass (teacher_logits stage)"),
    ("training", "trials' own training (epochs' seconds / trials at once)"),
    ("overhead", "**Tune's overhead** = wall - teacher pass - training"),
    ("overhead_per_trial", "overhead per trial"),
    ("fixed_start", "of which: data + Ray start"),
    ("in_trial_outside_epochs", "of which: inside trials, outside epochs (validation, reports)"),
    ("first_trial_outside_epochs", "- first trial of each process (first optimizer imports "
                                   "torch._dynamo)"),
    ("later_trials_outside_epochs", "- later trials (validation, reports)"),
    ("tune_scheduling", "of which: Tune's scheduling (tune stage - trials' wall)"),
    ("process_start", "- before each process's first trial (Ray worker; imports ray.tune, "
                      "torch, raykd)"),
    ("between_trials", "- between trials in a process (results, actor reuse)"),
    ("after_last_trial", "- after each process's last trial (uneven last wave, shutdown)"),
    ("rest", "of which: the rest (tables, plots, sweep.json)"),
)


def bench_table(summary: dict[str, Any]) -> str:
    """The wall times, their ratio and Tune's overhead as Markdown tables (median (min-max))."""
    data, fwd = summary["dataset"], summary["teacher_forward_examples"]
    head = (f"sweep ({summary['trials']} trials, {data['name']} train {data['train']}, "
            f"{summary['concurrency']} at once; {summary['rounds']} "
            f"{'rounds' if summary['ratio'] is None else 'interleaved rounds'})")
    over = summary["overhead"]
    lines = [
        f"| {head} | wall s, median (min-max) | teacher forward examples |", "|---|---|---|",
        f"| shared logits (teachers once) | {_cell(summary['shared_seconds'])} | {fwd['shared']} |",
        *([] if summary["ratio"] is None else [
            f"| naive (teachers in every trial) | {_cell(summary['naive_seconds'])} | "
            f"{fwd['naive']} |",
            f"| ratio naive / shared (of the medians) | {summary['ratio']:.2f}x | |"]), "",
        "| where the shared sweep's wall went | seconds, median (min-max) |", "|---|---|",
        *(f"| {label} | {_cell(over[key])} |" for key, label in OVERHEAD_ROWS if key in over),
        f"| **overhead share of the wall** | {_cell(over['overhead_share'], 1, 100.0)} % |",
    ]
    if "load_1min" in summary:
        load = summary["load_1min"]
        lines += ["", f"Machine: {summary['cpus']} CPUs; 1-minute load average "
                      f"{load['min']:.1f}-{load['max']:.1f} at the runs' starts and ends."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    """``python -m raykd.bench.sweep SPEC [--out DIR]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("spec", help="a sweep spec file or bundled example name")
    parser.add_argument("--out", type=Path, default=Path("raykd-runs/bench-sweep"))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-naive", action="store_true", help="the shared sweep alone")
    args = parser.parse_args(argv)
    run_sweep_bench(load_spec(args.spec), out=args.out, rounds=args.rounds,
                    naive=not args.no_naive)


if __name__ == "__main__":
    main()
