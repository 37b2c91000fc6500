"""What the dashboard's pages show, computed from stored jobs: no request, no template.

``summary`` turns a finished job's result into the rows of its results table (teachers,
ensemble, each student, or a sweep's best); ``compare_chart`` lays out the compare page's
bars; the submit page reads a pasted spec with :func:`raykd.core.spec_io.read_spec_text`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import yaml

from raykd.core.jobdir import StorageLayout
from raykd.service.schemas import JobPublic


def spec_yaml(spec: dict[str, Any] | None) -> str:
    """The spec as readable YAML (keys in the model's order)."""
    return yaml.safe_dump(spec or {}, sort_keys=False, default_flow_style=None, width=96)


def _num(value: Any) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(out) else out


def _artifact_path(storage: Path, job_id: str, path: str | None) -> str | None:
    """``path`` (absolute, as result files keep it) relative to the job's directory."""
    if not path:
        return None
    try:
        root = StorageLayout(storage).job(job_id).root.resolve()
        return Path(path).resolve().relative_to(root).as_posix()
    except ValueError:
        return None


def summary(storage: Path, job: JobPublic) -> dict[str, Any] | None:
    """The numbers of a finished job's tables: teachers, ensemble, students or the sweep's best."""
    result = job.result
    if not result:
        return None
    ensemble = result.get("ensemble") or {}
    ens_test = _num(ensemble.get("test_accuracy"))
    students = [_student_row(storage, job.id, s, ens_test) for s in result.get("students", [])]
    sweep_row = _sweep_row(storage, job, ens_test) if job.kind == "sweep" else None
    timings = result.get("timings") or {}
    return {
        "teachers": [{"index": t.get("index"), "model": _model(t.get("model")),
                      "val": _num(t.get("val_accuracy")), "test": _num(t.get("test_accuracy")),
                      "seconds": _num(t.get("train_seconds"))} for t in result.get("teachers", [])],
        "ensemble": {"val": _num(ensemble.get("val_accuracy")), "test": ens_test},
        "students": students,
        "sweep": sweep_row,
        "rows": students + ([sweep_row] if sweep_row else []),
        "total_seconds": _num(timings.get("total")) or (
            (job.finished_at - job.started_at) if job.finished_at and job.started_at else None),
    }


def _gap(test: float | None, ensemble: float | None) -> float | None:
    return None if test is None or ensemble is None else test - ensemble


def _student_row(storage: Path, job_id: str, student: dict[str, Any],
                 ens_test: float | None) -> dict[str, Any]:
    gens = student.get("generations") or []
    test = _num(student.get("test_accuracy"))
    return {
        "label": student.get("label"), "method": student.get("method"),
        "temperature": student.get("temperature"), "alpha": student.get("alpha"),
        "incorrect_weight": student.get("incorrect_weight"), "generations": len(gens),
        "val": _num(student.get("val_accuracy")), "test": test, "gap": _gap(test, ens_test),
        "seconds": sum(_num(g.get("seconds")) or 0.0 for g in gens),
        "checkpoint": _artifact_path(storage, job_id, gens[-1].get("checkpoint") if gens else None),
    }


def _sweep_row(storage: Path, job: JobPublic, ens_test: float | None) -> dict[str, Any] | None:
    """The sweep's best configuration as a student row (retrained on train+val when it was)."""
    result = job.result or {}
    final, best = result.get("final") or {}, result.get("best") or {}
    if not (final or best):
        return None
    method = final.get("method") or best
    test = _num(final.get("test_accuracy"))
    return {
        "label": "best of the sweep" + (" (retrained on train+val)" if final else ""),
        "method": method.get("method"), "temperature": method.get("temperature"),
        "alpha": method.get("alpha"), "incorrect_weight": method.get("incorrect_weight"),
        "generations": 1, "val": _num(best.get("val_accuracy")), "test": test,
        "gap": _gap(test, ens_test), "seconds": _num(final.get("seconds")),
        "checkpoint": _artifact_path(storage, job.id, final.get("checkpoint")),
        "trial_id": best.get("trial_id"),
    }


def _model(model: Any) -> str:
    if not isinstance(model, dict):
        return "?"
    hidden = model.get("hidden")
    return f"{model.get('name', '?')}" + (f" {hidden}" if hidden else "")


def _label(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters (an ellipsis ends a cut one)."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def compare_chart(compared: list[dict[str, Any]]) -> dict[str, Any]:
    """Horizontal bars of test accuracy per student, grouped by job, with the ensemble marked.

    ``compared`` holds ``{"job": JobPublic, "summary": summary(...)}`` per job. Each bar's
    value is written after its end, or after its job's ensemble tick when the two would
    overlap.
    """
    summaries = [c["summary"] or {} for c in compared]
    values = [r["test"] for s in summaries for r in s.get("rows", []) if r["test"] is not None]
    values += [s["ensemble"]["test"] for s in summaries
               if s and s["ensemble"]["test"] is not None]
    low = max(0.0, math.floor((min(values, default=0.0) - 0.02) * 20) / 20)
    high = 1.0 if not values else min(1.0, math.ceil((max(values) + 0.01) * 20) / 20)
    left, width, bar_h = 260, 420, 20

    def x(v: float) -> float:
        return left + (v - low) / max(high - low, 1e-9) * width

    bars, groups, y = [], [], 0
    for gi, (c, s) in enumerate(zip(compared, summaries, strict=True)):
        top, ens = y, s.get("ensemble", {}).get("test")
        ens_x = x(ens) if ens is not None else None
        for r in s.get("rows", []):
            if r["test"] is None:
                continue
            end = left + max(x(r["test"]) - left, 1.0)
            covered = ens_x is not None and end - 2 <= ens_x <= end + 48
            bars.append({"y": y, "x0": left, "w": end - left, "value": r["test"],
                         "value_x": (ens_x if covered and ens_x is not None else end) + 5,
                         "label": _label(f"{c['job'].name}: {r['label']}", 34), "group": gi % 6})
            y += bar_h + 6
        groups.append({"top": top, "bottom": y - 6, "ens_x": ens_x, "ens": ens})
        y += 10
    step = 0.1 if high - low > 0.4 else 0.05 if high - low > 0.1 else 0.01
    ticks, t = [], low
    while t <= high + 1e-9:
        ticks.append({"x": x(t), "label": f"{t * 100:.0f}%"})
        t = round(t + step, 4)
    return {"bars": bars, "groups": groups, "ticks": ticks, "height": y + 30, "left": left,
            "right": left + width, "axis_y": y + 4}
