"""Numbers into words and pictures for ``raykd bench quality``.

Pure functions of the collected results (no Ray, no torch): per-row statistics over
seeds, paired per-seed comparisons, the share of the student-to-ensemble gap a method
closes, the Markdown tables, the plain-language verdict, and the bar charts.

Accuracies are fractions in [0, 1]; differences are printed in percentage points.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

PAIRED = (
    ("kd", "none"),
    ("annealing", "kd"),
    ("born-again", "kd"),
    ("wkd W=0.5", "kd"),
    ("wkd W=0.75", "kd"),
    ("wkd W=0.9", "kd"),
)
"""Paired comparisons (row, baseline) in the tables; every row is also paired with the ensemble."""

WKD_COLOR, OTHER_COLOR, TEACHER_COLOR = "#d62728", "#1f77b4", "#999999"


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    arr = np.asarray(values, dtype=np.float64)
    return float(arr.mean()), float(arr.std(ddof=1)) if len(arr) > 1 else 0.0


def paired(a: Sequence[float], b: Sequence[float] | float) -> dict[str, Any]:
    """Per-seed differences ``a - b`` (b may be one number, e.g. the ensemble's accuracy).

    Returns ``mean``, ``std`` (sample), ``wins`` (a > b), ``ties``, ``seeds`` and ``diffs``.
    """
    diffs = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    mean, std = mean_std(diffs.tolist())
    return {
        "mean": mean,
        "std": std,
        "wins": int((diffs > 1e-12).sum()),
        "ties": int((np.abs(diffs) <= 1e-12).sum()),
        "seeds": int(len(diffs)),
        "diffs": diffs.tolist(),
    }


def gap_closed(acc: float, acc_none: float, acc_ensemble: float) -> float | None:
    """``(acc - acc_none) / (acc_ensemble - acc_none)``; None unless the student alone is below."""
    gap = acc_ensemble - acc_none
    return (acc - acc_none) / gap if gap > 1e-12 else None


def summarize(finals: dict[str, list[dict[str, Any]]], ensemble: float) -> dict[str, Any]:
    """Per-row statistics and the paired comparisons of one scenario."""
    tests = {
        row: [r["test_accuracy"] for r in sorted(runs, key=lambda r: r["seed"])]
        for row, runs in finals.items()
    }
    none_mean = mean_std(tests["none"])[0] if "none" in tests else float("nan")
    rows: dict[str, Any] = {}
    for row, runs in finals.items():
        mean, std = mean_std(tests[row])
        val_mean, _ = mean_std([r["val_accuracy"] for r in runs])
        rows[row] = {
            "test_mean": mean,
            "test_std": std,
            "val_mean": val_mean,
            "seeds": len(runs),
            "vs_ensemble": paired(tests[row], ensemble),
            "gap_closed": gap_closed(mean, none_mean, ensemble) if row != "none" else 0.0,
        }
        bans = [r["ban_test_accuracy"] for r in runs if "ban_test_accuracy" in r]
        if bans:
            rows[row]["ban_test_mean"], rows[row]["ban_test_std"] = mean_std(bans)
    comparisons = {
        f"{a} vs {b}": paired(tests[a], tests[b]) for a, b in PAIRED if a in tests and b in tests
    }
    return {"rows": rows, "paired": comparisons}


def pct(x: float) -> str:
    return f"{100 * x:.2f}"


def points(x: float) -> str:
    return f"{100 * x:+.2f}"


def wins(p: dict[str, Any]) -> str:
    ties = f" ({p['ties']} tied)" if p["ties"] else ""
    return f"{p['wins']}/{p['seeds']}{ties}"


def _params(p: dict[str, float] | None) -> str:
    if not p:
        return "-"
    return ", ".join(f"{'T' if k == 'temperature' else k}={v:g}" for k, v in p.items())


def row_table(sc: dict[str, Any], teachers: dict[str, Any]) -> list[str]:
    """The main table of a scenario: teachers, ensemble, then every student row."""
    ens = teachers["ensemble"]["test_accuracy"]
    t_mean, t_std = mean_std(teachers["test_accuracy"])
    lines = [
        "| row | test accuracy % (mean ± std) | seeds | vs ensemble (points) | gap closed "
        "| T, alpha |",
        "|---|---|---|---|---|---|",
        f"| teachers (each, {len(teachers['test_accuracy'])}) | {pct(t_mean)} ± {pct(t_std)} | - | "
        f"{points(t_mean - ens)} | - | - |",
        f"| **ensemble of {len(teachers['test_accuracy'])}** | **{pct(ens)}** | - | 0 | 100% | - |",
    ]
    for name, r in sc["summary"]["rows"].items():
        gap = r["gap_closed"]
        gap_s = "-" if name == "none" else ("n/a" if gap is None else f"{100 * gap:.0f}%")
        lines.append(
            f"| {name} | {pct(r['test_mean'])} ± {pct(r['test_std'])} | {r['seeds']} | "
            f"{points(r['vs_ensemble']['mean'])} | {gap_s} | {_params(sc['picked'].get(name))} |"
        )
    return lines


def paired_table(sc: dict[str, Any]) -> list[str]:
    """Per-seed paired differences: method vs baseline, and each WKD row vs the ensemble."""
    lines = [
        "| comparison (paired by seed) | mean diff (points) | std (points) | wins/seeds |",
        "|---|---|---|---|",
    ]
    entries = list(sc["summary"]["paired"].items())
    entries += [
        (f"{name} vs ensemble", r["vs_ensemble"])
        for name, r in sc["summary"]["rows"].items()
        if name.startswith("wkd") or name == "kd"
    ]
    for name, p in entries:
        lines.append(f"| {name} | {points(p['mean'])} | {100 * p['std']:.2f} | {wins(p)} |")
    return lines


def best_wkd(summary: dict[str, Any]) -> str | None:
    """The WKD row with the best mean validation accuracy (chosen without looking at test)."""
    names = [n for n in summary["rows"] if n.startswith("wkd")]
    return max(names, key=lambda n: summary["rows"][n]["val_mean"]) if names else None


def _noise(p: dict[str, Any]) -> str:
    """' (within seed-to-seed noise)' when |mean| <= 2 standard errors of the paired diffs."""
    n = p["seeds"]
    stderr = p["std"] / math.sqrt(n) if n > 1 else float("inf")
    return ", within seed-to-seed noise" if abs(p["mean"]) <= 2 * stderr else ""


def verdict(title: str, summary: dict[str, Any], ensemble: float) -> str:
    """Plain sentences, from the numbers: did WKD's student exceed its ensemble here?"""
    name = best_wkd(summary)
    if name is None:
        return f"{title}: no WKD row was run."
    r = summary["rows"][name]
    p, n = r["vs_ensemble"], r["seeds"]
    if p["mean"] > 0 and p["wins"] == n:
        answer = "Yes, in every seed"
    elif p["mean"] > 0:
        answer = f"On average only (above it in {p['wins']} of {n} seeds)"
    else:
        answer = f"No (above it in {p['wins']} of {n} seeds)"
    sentence = (
        f"{title}: WKD's student ({name}, the W picked on validation) reached "
        f"{pct(r['test_mean'])}% ± {pct(r['test_std'])} test accuracy over {n} seeds, "
        f"the ensemble {pct(ensemble)}%. Did it exceed its ensemble? {answer}: "
        f"{points(p['mean'])} points on average (std {100 * p['std']:.2f}){_noise(p)}."
    )
    kd = summary["paired"].get(f"{name} vs kd")
    if kd is not None:
        sentence += (
            f" Against plain KD: {points(kd['mean'])} points (std {100 * kd['std']:.2f}), "
            f"ahead in {kd['wins']} of {kd['seeds']} seeds{_noise(kd)}."
        )
    return sentence


def teacher_lines(name: str, teachers: dict[str, Any]) -> list[str]:
    """What the ensemble is, and how often WKD can act (METHOD.md section 6)."""
    acts = teachers["disagreement"]["train"]
    accs = ", ".join(pct(a) for a in teachers["test_accuracy"])
    return [
        f"Teachers: {len(teachers['test_accuracy'])} x {_model(teachers['model'])}, "
        f"test accuracy {accs}%; ensemble {pct(teachers['ensemble']['test_accuracy'])}%. "
        f"On the training split some but not all teachers are wrong on "
        f"{pct(acts['some_wrong'])}% of the examples (where WKD changes the target), "
        f"all are wrong on {pct(acts['all_wrong'])}%."
    ]


def _model(model: dict[str, Any]) -> str:
    if model["name"] == "cnn":
        return f"CNN width {model['width']}"
    if model["name"] == "mlp":
        return f"MLP {list(model['hidden'])}"
    return str(model["name"])


def dataset_lines(name: str, ds: dict[str, Any]) -> list[str]:
    """A dataset's heading: data sizes, training settings, teachers, the chart."""
    d, plan = ds["data"], ds["plan"]
    train = plan["train"]
    return [
        "", f"## {name}", "",
        f"Data: {d['train']} train / {d['val']} val / {d['test']} test examples, "
        f"{d['num_classes']} classes. Training (teachers and students alike): {train['epochs']} "
        f"epochs, batch {train['batch_size']}, AdamW lr {train['lr']:g}; every run keeps its "
        f"best-validation epoch. Sweep trials: {plan['sweep_epochs']} epoch(s), seed "
        f"{plan['sweep_seed']}; final runs: seeds 0..{ds['seeds'] - 1}.",
        "", *teacher_lines(name, ds["teachers"]), "", f"![{name}]({ds['plot']})",
    ]


def markdown(result: dict[str, Any]) -> str:
    """``quality.md``: the verdicts first, then per dataset and scenario the two tables."""
    grid = result["grid"]
    lines = [
        "# raykd bench quality", "",
        "Can a student exceed its teachers? ROaD's weighted KD (WKD) against plain KD, teacher "
        "annealing, born-again (generation 2 taught via KD by the KD student) and the student "
        "alone; accuracies on each dataset's test split, paired by seed.", "",
        *(f"- {s}" for s in result["sentences"]),
    ]
    for ds_name, ds in result["datasets"].items():
        lines += dataset_lines(ds_name, ds)
        for sc_name, sc in ds["scenarios"].items():
            lines += ["", f"### {ds_name}: {sc_name} (student {_model(sc['student'])})", "",
                      *row_table(sc, ds["teachers"]), "", *paired_table(sc), "", sc["sentence"]]
    lines += [
        "", f"Gap closed = (acc - acc_none) / (acc_ensemble - acc_none). T and alpha were picked "
        f"per row on the validation split: T in {list(grid['temperatures'])} x alpha in "
        f"{list(grid['alphas'])} (annealing, which has no alpha: T in "
        f"{list(grid['annealing_temperatures'])}). "
        f"Wall time {result['wall_seconds'] / 60:.1f} min.",
        "",
    ]
    return "\n".join(lines)


def plot_dataset(ds_name: str, ds: dict[str, Any], path: Path) -> Path:
    """Bars: each row's test accuracy minus the ensemble's (points, mean ± std over seeds).

    One panel per scenario; the ensemble is the zero line, so a bar above it is a student
    that exceeded its teachers' ensemble.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scenarios = list(ds["scenarios"].items())
    fig, axes = plt.subplots(1, len(scenarios), figsize=(6.5 * len(scenarios), 4.6), squeeze=False)
    ens = ds["teachers"]["ensemble"]["test_accuracy"]
    t_mean, t_std = mean_std(ds["teachers"]["test_accuracy"])
    for ax, (sc_name, sc) in zip(axes[0], scenarios, strict=True):
        rows = sc["summary"]["rows"]
        names = ["teachers (each)", *rows]
        diffs = [100 * (t_mean - ens), *(100 * r["vs_ensemble"]["mean"] for r in rows.values())]
        stds = [100 * t_std, *(100 * r["vs_ensemble"]["std"] for r in rows.values())]
        colors = [TEACHER_COLOR] + [WKD_COLOR if n.startswith("wkd") else OTHER_COLOR for n in rows]
        bars = ax.bar(range(len(names)), diffs, yerr=stds, capsize=4, color=colors)
        ax.bar_label(bars, labels=[f"{d:+.2f}" for d in diffs], fontsize=7, padding=3)
        ax.axhline(0.0, color="black", linewidth=1)
        ax.set_xticks(range(len(names)), names, rotation=35, ha="right")
        ax.set_ylabel("test accuracy minus the ensemble's (points)")
        ax.set_title(f"{ds_name}: {sc_name}, student {_model(sc['student'])}\n0 = the ensemble "
                     f"({pct(ens)}%); above 0 = exceeds it; mean ± std over seeds", fontsize=10)
        low, high = ax.get_ylim()
        ax.set_ylim(low - 0.05 * (high - low), max(high, 0.0) + 0.12 * (high - low))
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def render(out: Path) -> None:
    """Rebuild ``quality.md`` and the charts in ``out`` from its ``quality.json`` (no training)."""
    import json

    result = json.loads((out / "quality.json").read_text())
    for name, ds in result["datasets"].items():
        plot_dataset(name, ds, out / ds["plot"])
    (out / "quality.md").write_text(markdown(result))
