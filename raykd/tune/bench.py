"""What sharing the teacher logits saves: one sweep run twice, shared and naive.

- shared: the teacher stage runs once (on a cold logit cache, so its forward passes are
  counted in), the train logits go into the object store once, trials read them;
- naive: no teacher stage; every trial rebuilds the teachers from their checkpoints and
  runs their forward passes over the train split itself.

Both runs use the same trained teachers (trained or taken from the cache beforehand, not
timed), the same trials and no final retraining; the wall time of each ``run_sweep``
call is compared. Run it with::

    python -m raykd.tune.bench mnist-sweep --out raykd-runs/bench-sweep
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from raykd.core.spec import JobSpec, load_spec
from raykd.engine.context import Job
from raykd.engine.prepare import cache_dir, ensure_ray, put_splits, run_teachers
from raykd.teachers.cache import LogitCache
from raykd.tune.driver import load_data, run_sweep
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
    """The spec both runs use: fixed teacher checkpoints, a fresh logit cache, no retraining."""
    data = json.loads(spec.model_dump_json())
    for teacher, path in zip(data["teachers"], checkpoints, strict=True):
        teacher["checkpoint"] = str(Path(path).resolve())
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    data["cache"] = {**data["cache"], "dir": str(out / f"logits-{stamp}")}
    data["sweep"]["final_retrain"] = False
    return JobSpec.model_validate(data)


def _timed(spec: JobSpec, job_dir: Path, *, naive: bool, log: Log) -> tuple[float, dict[str, Any]]:
    shutil.rmtree(job_dir, ignore_errors=True)  # a fresh sweep, never a resumed one
    start = time.perf_counter()
    result = run_sweep(spec, job_dir=job_dir, log=log, naive=naive)
    return time.perf_counter() - start, result


def run_sweep_bench(spec: JobSpec, *, out: Path, log: Log = print) -> dict[str, Any]:
    """Time the sweep shared and naive; write ``bench.json`` and ``bench.md`` under ``out``.

    Raises:
        SpecError: before any work, when the spec cannot be swept (no ``sweep:`` section,
            augmentation on, optuna missing).
    """
    check_sweep(spec)
    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    fixed = bench_specs(spec, trained_teachers(spec, out, log), out)
    shared_s, shared = _timed(fixed, out / "shared", naive=False, log=log)
    naive_s, naive = _timed(fixed, out / "naive", naive=True, log=log)
    summary = {
        "spec": spec.name,
        "trials": len(shared["trials"]),
        "dataset": shared["dataset"],
        "shared_seconds": shared_s,
        "naive_seconds": naive_s,
        "ratio": naive_s / shared_s,
        "shared_timings": shared["timings"],
        "naive_timings": naive["timings"],
        "teacher_forward_examples": {
            "shared": sum(
                s["teacher_forward_examples"] for s in shared["logit_cache"]["teacher"].values()
            ),
            "naive": sum(t["teacher_forward_examples"] for t in naive["trials"]),
        },
        "concurrency": shared["resources"]["concurrency"],
        "cpus": os.cpu_count(),
        "load_average_after": os.getloadavg(),
    }
    (out / "bench.json").write_text(json.dumps(summary, indent=2))
    (out / "bench.md").write_text(bench_table(summary))
    ratio = summary["ratio"]
    log(f"sweep bench: shared {shared_s:.1f} s, naive {naive_s:.1f} s, ratio {ratio:.2f}x")
    return summary


def bench_table(summary: dict[str, Any]) -> str:
    """The two wall times and their ratio as a Markdown table."""
    data, fwd = summary["dataset"], summary["teacher_forward_examples"]
    head = f"sweep ({summary['trials']} trials, {data['name']} train {data['train']})"
    return (
        f"| {head} | wall s | teacher forward examples |\n|---|---|---|\n"
        f"| shared logits (teachers once) | {summary['shared_seconds']:.1f} | {fwd['shared']} |\n"
        f"| naive (teachers in every trial) | {summary['naive_seconds']:.1f} | {fwd['naive']} |\n"
        f"| ratio naive / shared | {summary['ratio']:.2f}x | |\n"
    )


def main(argv: list[str] | None = None) -> None:
    """``python -m raykd.tune.bench SPEC [--out DIR]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("spec", help="a sweep spec file or bundled example name")
    parser.add_argument("--out", type=Path, default=Path("raykd-runs/bench-sweep"))
    args = parser.parse_args(argv)
    run_sweep_bench(load_spec(args.spec), out=args.out)


if __name__ == "__main__":
    main()
