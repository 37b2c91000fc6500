"""The small-job section of ``raykd bench speed``: where fixed costs, not steps, decide.

A 3,000-row tabular job (the built-in diamonds table, the first 3,000 training rows):
3 MLP [64] teachers, an MLP [64, 64] student, :data:`EPOCHS` epochs of batch 128
(23 steps each), methods none, kd and wkd (three students). Its teachers are trained and
their logits cached once, before the clock, so a job's student stage is all that differs.

Per round, interleaved like the rows: the job with each student runner (``driver``: in
the job's driver process, what ``auto`` picks on the local Ray the bench starts; ``actor``:
the job's one student actor, what ``auto`` picks on a cluster joined by address; ``train``:
a Ray Train fit per student) and the plain PyTorch loop of one KD student on the same rows
and epochs (row (p)'s loop: cached logits by index, no validation). The ratio reported is

    (student stage seconds / students) / plain training seconds

the target being <= 2 (:data:`TARGET`), judged on the runner ``auto`` picks here
(:data:`JUDGED`: driver when timed, else actor). The student stage counts what a user
waits for: the student's start, every epoch with its validation and state save, and the
evaluation of its best weights.

Where a job's fixed costs go (:data:`COSTS`, seconds per job, medians over the rounds):
Ray's start (when no Ray runs, as for a ``raykd run`` on a machine of its own; outside the
job's student stage: the bench starts Ray before the job, timed here), the wait for the
student actor's process (a fresh Python importing torch) or for the driver's warm-up
(torch's lazy imports, in a thread from the job's start; this long-lived bench process did
them in its first job), each epoch's validation and
state save (in the actor), the best weights' evaluation on val and test (in the driver),
the training steps themselves, and the rest of the student stage (per-epoch reports and
events, each fit's set-up). ``python -m raykd.bench.speed_small --out DIR`` runs this
section alone (``small.json``, ``small.md``).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from raykd.bench.monitor import ray_for
from raykd.bench.plain import PlainRun, run_plain_subprocess
from raykd.bench.speed_plan import spread
from raykd.console_text import markdown_table
from raykd.core.spec import JobSpec
from raykd.data import load_dataset
from raykd.engine import Job, ensure_ray, put_splits, run_job, run_teachers
from raykd.teachers.cache import LogitCache
from raykd.train.steps import steps_per_epoch

ROWS_LIMIT = 3_000
EPOCHS = 30
BATCH = 128
TEACHER = {"name": "mlp", "hidden": [64]}
STUDENT = {"name": "mlp", "hidden": [64, 64]}
RUNNERS = ("driver", "actor", "train")
JUDGED = ("driver", "actor")
"""The runners the target is judged on, the first timed: what ``auto`` picks on the bench's
local Ray (driver), else on a cluster joined by address (actor)."""
TARGET = 2.0
"""Most seconds of student stage per student, in units of the plain loop's training time."""
COSTS = {
    "ray_start": "Ray start (no Ray running; before the job, outside the student stage)",
    "student_actor_start": "waiting for the student actor's process (imports torch; actor runner)",
    "student_warm_up": "waiting for the driver's torch warm-up (driver runner; begun with the job)",
    "student_validation": "validation after each epoch (and each fit's set-up)",
    "student_state_save": "state save after each epoch",
    "student_scoring": "best weights on val and test (driver)",
    "training_steps": "training steps (the epochs' own time)",
    "other": "rest of the student stage (reports, events, pruning states)",
}
"""The fixed-cost lines of the section: key -> what it is."""


def small_spec(out: Path, runner: str, checkpoints: list[str] | None) -> Any:
    """The small job's JobSpec (``checkpoints``: the teachers, None to train them)."""
    return JobSpec.model_validate({
        "name": f"bench-small-{runner}",
        "data": {"dataset": "diamonds", "val_fraction": 0.1, "seed": 0,
                 "train_limit": ROWS_LIMIT},
        "teachers": [{"model": TEACHER, "seed": s, "checkpoint": checkpoints[i] if checkpoints
                      else None} for i, s in enumerate((1, 2, 3))],
        "teacher_train": {"epochs": EPOCHS, "batch_size": BATCH, "lr": 3e-3},
        "student": {"model": STUDENT},
        "train": {"epochs": EPOCHS, "batch_size": BATCH, "lr": 3e-3, "seed": 0},
        "methods": [{"method": "none"}, {"method": "kd", "temperature": 2.0, "alpha": 0.5},
                    {"method": "wkd", "temperature": 2.0, "alpha": 0.5, "incorrect_weight": 0.5}],
        "scaling": {"num_workers": 1, "cpus_per_worker": 2.0, "use_gpu": False,
                    "student_runner": runner},
        "storage": str(out),
    })


def small_teachers(out: Path, log: Any) -> list[str]:
    """Train the small job's teachers and cache their logits (once; reused when present)."""
    job = Job(spec=small_spec(out, "actor", None), job_dir=out / "small-setup", log=log)
    data = load_dataset("diamonds", val_fraction=0.1, seed=0, train_limit=ROWS_LIMIT)
    ensure_ray()
    return run_teachers(job, data, LogitCache(out / "cache"), put_splits(data)).checkpoints


def run_small_job(runner: str, out: Path, checkpoints: list[str], log: Any) -> dict[str, Any]:
    """One run of the small job with ``runner``: its student stage and the job's wall time."""
    job_dir = out / "jobs" / f"small-{runner}"
    shutil.rmtree(job_dir, ignore_errors=True)
    result = run_job(small_spec(out, runner, checkpoints), job_dir=job_dir, log=log)
    students = [g for s in result["students"] for g in s["generations"]]
    t = result["timings"]
    steps = sum(h["epoch_seconds"] for g in students for h in g["history"])
    return {"students": len(students), "student_stage_seconds": t["students"],
            "per_student_seconds": t["students"] / len(students),
            "epoch_seconds": steps / len(students),
            "job_seconds": t["total"], "timings": t, "costs": job_costs(t, steps),
            "test_accuracy": {s["label"]: s["test_accuracy"] for s in result["students"]}}


def job_costs(timings: dict[str, float], steps: float) -> dict[str, float]:
    """The student stage split into :data:`COSTS` (seconds per job; no ``ray_start``)."""
    parts = {k: timings.get(k, 0.0) for k in COSTS if k.startswith("student_")}
    return {**parts, "training_steps": steps,
            "other": timings["students"] - steps - sum(parts.values())}


def run_small_plain(out: Path, checkpoints: list[str]) -> dict[str, Any]:
    """The plain loop of one KD student: same rows, model, epochs and batch; no validation."""
    n = len(load_dataset("diamonds", val_fraction=0.1, seed=0, train_limit=ROWS_LIMIT).train)
    run = PlainRun(dataset="diamonds", student=STUDENT, teachers=tuple(checkpoints),
                   steps=EPOCHS * steps_per_epoch(n, batch_size=BATCH), train_limit=ROWS_LIMIT,
                   batch_size=BATCH, lr=3e-3, temperature=2.0, alpha=0.5, threads=2,
                   loop="cached", warmup_steps=0)
    return run_plain_subprocess(run, workdir=out / "plain", name="small")


def small_section(rounds: int, out: Path, log: Any, ray_for: Callable[[bool], None],
                  runners: tuple[str, ...] = RUNNERS) -> dict[str, Any]:
    """Every round: plain, then the runners (their order rotated); medians and the ratios."""
    import ray

    ray_for(True)
    checkpoints = small_teachers(out, log)
    runs: dict[str, list[dict[str, Any]]] = {k: [] for k in ("plain", *runners)}
    ray_starts: list[float] = []
    for r in range(rounds):
        order = [*runners[r % 2:], *runners[: r % 2]]
        for key in (["plain", *order] if r % 2 == 0 else [*order, "plain"]):
            starting, start = key != "plain" and not ray.is_initialized(), time.perf_counter()
            ray_for(key != "plain")
            if starting:
                ray_starts.append(time.perf_counter() - start)
            log(f"small job, round {r + 1}/{rounds}: {key}")
            runs[key].append(run_small_plain(out, checkpoints) if key == "plain"
                             else run_small_job(key, out, checkpoints, log))
    plain = spread([p["epoch_seconds"] for p in runs["plain"]])
    section: dict[str, Any] = {"rows_limit": ROWS_LIMIT, "epochs": EPOCHS, "batch_size": BATCH,
                               "teacher": TEACHER, "student": STUDENT, "target": TARGET,
                               "plain_seconds": plain, "runners": {},
                               "ray_start_seconds": spread(ray_starts) if ray_starts else None}
    for key in runners:
        per = spread([x["per_student_seconds"] for x in runs[key]])
        section["runners"][key] = {
            "per_student_seconds": per, "ratio": per["median"] / plain["median"],
            "job_seconds": spread([x["job_seconds"] for x in runs[key]]),
            "students": runs[key][0]["students"],
            "costs": {k: spread([x["costs"][k] for x in runs[key]])
                      for k in runs[key][0]["costs"]},
            "test_accuracy": runs[key][-1]["test_accuracy"]}
    return section


def small_lines(section: dict[str, Any]) -> list[str]:
    """The Markdown of the small-job section."""
    plain = section["plain_seconds"]
    rows = [["plain PyTorch KD loop, one student (no validation)", f"{plain['median']:.2f}",
             f"{plain['min']:.2f}-{plain['max']:.2f}", "1.00", "-"]]
    for key, r in section["runners"].items():
        per, job = r["per_student_seconds"], r["job_seconds"]
        rows.append([f"raykd student stage per student, runner {key}", f"{per['median']:.2f}",
                     f"{per['min']:.2f}-{per['max']:.2f}", f"{r['ratio']:.2f}",
                     f"{job['median']:.1f}"])
    judged = next((k for k in JUDGED if k in section["runners"]), "actor")
    ratio = section["runners"].get(judged, {}).get("ratio", float("nan"))
    default = {"driver": "the default for one worker on a local Ray",
               "actor": "the default for one worker on a joined cluster"}.get(judged, "")
    met = ratio <= section["target"]
    return ["", f"## Small job: {section['rows_limit']:,} tabular rows, {section['epochs']} epochs",
            "", f"diamonds (first {section['rows_limit']:,} training rows), 3 MLP "
            f"{TEACHER['hidden']} teachers (cached), MLP {STUDENT['hidden']} students "
            f"none/kd/wkd, batch {section['batch_size']}; {plain['n']} interleaved rounds, "
            "medians.", "",
            markdown_table(["what", "seconds", "min-max", "vs plain", "job wall s"], rows), "",
            f"- student stage per student / plain training time (runner {judged}, {default}) = "
            f"{ratio:.2f} (target <= {section['target']:g}): {'met' if met else '**missed**'}",
            *cost_lines(section)]


def cost_lines(section: dict[str, Any]) -> list[str]:
    """The fixed-cost table: seconds per job of each :data:`COSTS` line, per runner."""
    runners = {k: r["costs"] for k, r in section["runners"].items() if "costs" in r}
    if not runners:
        return []  # a report from before the breakdown
    ray_start = section.get("ray_start_seconds")
    rows = []
    for key, what in COSTS.items():
        cells = [runners[r].get(key) if key != "ray_start" else ray_start for r in runners]
        rows.append([what, *(f"{c['median']:.2f} ({c['min']:.2f}-{c['max']:.2f})" if c else "-"
                             for c in cells)])
    return ["", "Where a job's time goes (seconds per job of 3 students, median (min-max)):", "",
            markdown_table(["what", *(f"runner {r}" for r in runners)], rows)]


def main(argv: list[str] | None = None) -> None:
    """``python -m raykd.bench.speed_small [--out DIR] [--rounds N]``: this section alone."""
    import argparse
    import json

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("raykd-runs/bench-speed"))
    parser.add_argument("--rounds", type=int, default=3, help="Interleaved rounds (default 3).")
    parser.add_argument("--runners", default=",".join(RUNNERS),
                        help=f"Student runners to time (default {','.join(RUNNERS)}).")
    ns = parser.parse_args(argv)
    runners = tuple(r.strip() for r in ns.runners.split(",") if r.strip())
    if not runners or set(runners) - set(RUNNERS):
        parser.error(f"--runners={ns.runners}: accepted: {', '.join(RUNNERS)} (comma-separated)")
    import ray

    out, started = ns.out.resolve(), not ray.is_initialized()
    out.mkdir(parents=True, exist_ok=True)
    section = small_section(ns.rounds, out, print, lambda on: ray_for(on, started), runners)
    ray_for(False, started)
    (out / "small.json").write_text(json.dumps(section, indent=2))
    text = "\n".join(small_lines(section)).strip() + "\n"
    (out / "small.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
