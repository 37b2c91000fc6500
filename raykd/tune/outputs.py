"""What a sweep leaves in its job directory besides Tune's state: ``trials.csv``, the plots
``heatmap_w_t.png`` and ``alpha.png``, and ``sweep.json`` (:class:`raykd.core.results.SweepResult`)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from raykd.core.jobdir import JobLayout, spec_hash
from raykd.core.results import SweepResult
from raykd.data import Dataset
from raykd.engine import Job, dataset_row, versions
from raykd.tune.plots import alpha_plot, heatmap_w_t
from raykd.tune.results import write_csv
from raykd.tune.space import METRIC, TrialPlan


def write_outputs(job_dir: Path, rows: list[dict[str, Any]],
                  metric: str = METRIC) -> dict[str, str]:
    """The trials table and the two plots (of the sweep's ``metric``); their paths."""
    layout = JobLayout(job_dir)
    return {
        "trials": str(write_csv(rows, layout.trials, metric)),
        "heatmap": str(heatmap_w_t(rows, layout.heatmap, metric)),
        "alpha": str(alpha_plot(rows, layout.alpha_plot, metric)),
    }


def _json_row(row: dict[str, Any]) -> dict[str, Any]:
    """A row with NaN as None: ``sweep.json`` stays valid JSON for any reader."""
    return {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in row.items()}


def sweep_result(
    job: Job,
    data: Dataset,
    rows: list[dict[str, Any]],
    best: dict[str, Any],
    final: dict[str, Any] | None,
    files: dict[str, str],
    plan: TrialPlan,
    *,
    resumed: bool,
    naive: bool,
    timings: dict[str, float],
    metric: str = METRIC,
) -> SweepResult:
    """``sweep.json``, validated: the spec, the teachers, every trial, the best, the final student."""
    from dataclasses import asdict

    spec = job.spec
    return SweepResult.model_validate({
        "job_id": job.job_id,
        "spec_hash": spec_hash(spec),
        "attempts": job.attempt,
        "versions": versions(),
        "job": spec.name,
        "job_dir": str(job.job_dir),
        "dataset": dataset_row(data, job.job_dir),  # class names and columns, as result.json
        "spec": json.loads(spec.model_dump_json()),
        "timings": timings,
        "mode": "naive" if naive else "shared",
        "metric": metric,
        "resumed": resumed,
        "sweep": json.loads(spec.sweep.model_dump_json()) if spec.sweep else None,
        "base_method": spec.methods[0].model_dump(mode="json"),
        "resources": {**asdict(plan), "cpus_per_trial": plan.cpus_per_trial},
        **{k: job.result[k] for k in ("teachers", "ensemble", "logit_cache") if k in job.result},
        "trials": [_json_row(r) for r in rows],
        "best": _json_row(best),
        "final": final,
        "files": files,
    })
