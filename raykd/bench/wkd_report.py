"""Statements and charts of ``raykd bench wkd`` (pure: no Ray, no training).

:func:`markdown` writes ``wkd.md`` from the tables of :mod:`raykd.bench.wkd_tables` and
:func:`tracking` (does the test gain over KD follow the gain in the target's accuracy?);
:func:`plot_dataset` draws accuracy against W and :func:`plot_tracks` the test gain over
KD against the gain in the target's training accuracy. :func:`write_all` writes them with
``wkd.json``; :func:`render` rebuilds them from ``wkd.json``. A scenario's statistics come
from :func:`raykd.bench.wkd_stats.summarize_scenario`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from raykd.bench.wkd_stats import PICKED, spearman
from raykd.bench.wkd_tables import (
    AUTO,
    _model,
    _w,
    curve_table,
    ensemble_gap,
    pct,
    points,
    summary_table,
    teacher_table,
)


def tracking(result: Mapping[str, Any]) -> dict[str, Any]:
    """Does the test gain over KD follow the gain in the target's training accuracy?

    One point per scenario and WKD row of the curve: x = target train accuracy minus KD's
    target's, y = mean test gain over KD. Spearman's rho over all points and per dataset;
    and, per scenario, the largest gain against the share of examples WKD can act on and
    against :func:`ensemble_gap`.
    """
    points_all: list[tuple[float, float]] = []
    per_dataset: dict[str, float | None] = {}
    scenarios = []
    for name, ds in result["datasets"].items():
        mine = []
        for sc in ds["scenarios"].values():
            ens = ds["ensembles"][sc["ensemble"]]
            base = ens["targets"]["kd"]["accuracy"]
            curve = [r for r in ds["curve"] if r != "kd"]
            for row in curve:
                mine.append((ens["targets"][row]["accuracy"] - base,
                             sc["summary"]["vs_kd"][row]["mean"]))
            best = max(curve, key=lambda r: sc["summary"]["vs_kd"][r]["mean"])
            scenarios.append({"scenario": f"{name}/{sc['ensemble']}/{sc['student']}",
                              "some_wrong": ens["disagreement"]["train"]["some_wrong"],
                              "ensemble_gap": ensemble_gap(ens),
                              "best_gain": sc["summary"]["vs_kd"][best]["mean"]})
        per_dataset[name] = spearman([x for x, _ in mine], [y for _, y in mine])
        points_all += mine
    return {
        "rho": spearman([x for x, _ in points_all], [y for _, y in points_all]),
        "rho_per_dataset": per_dataset,
        "rho_some_wrong": spearman([s["some_wrong"] for s in scenarios],
                                   [s["best_gain"] for s in scenarios]),
        "rho_ensemble_gap": spearman([s["ensemble_gap"] for s in scenarios],
                                     [s["best_gain"] for s in scenarios]),
        "scenarios": scenarios,
    }


def _rho(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.2f}"


def markdown(result: Mapping[str, Any]) -> str:
    """``wkd.md``: the summary tables, how the gain tracks the target, then every W curve."""
    first = next(iter(result["datasets"].values()))["plan"]
    track = tracking(result)
    lines = [
        "# raykd bench wkd: where Weighted KD helps", "",
        f"Produced by `{result['command']}` in {result['wall_seconds'] / 60:.1f} min "
        f"(started {result['started']}). Every student: T = {first['temperature']:g}, alpha = "
        f"{first['alpha']:g} (raykd's defaults), its best-validation epoch kept, test accuracy "
        "on the dataset's test split. Seeds 0..n-1 are shared by every row (same "
        "initialisation and batch order): differences are paired by seed. Cells `a ± s "
        "(W/T/L, p=...)`: mean ± std of the per-seed differences in percentage points, "
        "wins/ties/losses, two-sided paired t test.", "",
        "## The teachers and their targets", "", *teacher_table(result), "",
        "## What the student gets", "", *summary_table(result), "",
        "## Does the gain track the target?", "",
        f"Spearman's rho between a WKD row's gain in target training accuracy (over the plain "
        f"average's) and its test gain over KD: {_rho(track['rho'])} over all scenarios and W "
        + "(" + ", ".join(f"{k}: {_rho(v)}" for k, v in track["rho_per_dataset"].items()) + "); "
        f"between the share of training examples where some but not all teachers are wrong and "
        f"the scenario's best WKD gain: {_rho(track['rho_some_wrong'])}; between the ensemble's "
        f"accuracy minus its best teacher's and that gain: {_rho(track['rho_ensemble_gap'])} "
        f"({len(track['scenarios'])} scenarios).", "",
        "| scenario | some but not all wrong (train) | ensemble − best teacher (test) "
        "| best WKD row − KD |", "|---|---|---|---|",
        *(f"| {t['scenario']} | {pct(t['some_wrong'])}% | {points(t['ensemble_gap'])} | "
          f"{points(t['best_gain'])} |" for t in track["scenarios"]), "",
        "![tracks](wkd_tracks.png)",
    ]
    for name, ds in result["datasets"].items():
        d, plan = ds["data"], ds["plan"]
        lines += [
            "", f"## {name}", "",
            f"Data: {d['train']} train / {d['val']} val / {d['test']} test examples, "
            f"{d['num_classes']} classes. Teachers: {plan['teacher_train']['epochs']} epochs, "
            f"batch {plan['teacher_train']['batch_size']}; students: {plan['train']['epochs']} "
            f"epochs, batch {plan['train']['batch_size']}, AdamW lr {plan['train']['lr']:g}; "
            f"{ds['seeds']} seeds.", "", f"![{name}]({ds['plot']})",
        ]
        for sc_name, sc in ds["scenarios"].items():
            ens = ds["ensembles"][sc["ensemble"]]
            lines += ["", f"### {name}: {sc_name} (student {_model(sc['student_model'])})", "",
                      *curve_table(sc, ens, ds["rows"])]
    return "\n".join(lines) + "\n"


# --- charts -----------------------------------------------------------------------------


def _axes_grid(n: int, plt: Any) -> tuple[Any, list[Any]]:
    cols = 2 if n > 1 else 1
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(6.2 * cols, 4.3 * rows), squeeze=False)
    return fig, [ax for row in axes for ax in row]


def plot_dataset(name: str, ds: Mapping[str, Any], path: Path) -> Path:
    """Test accuracy against W, one panel per scenario, with the KD and none lines.

    The W curve is mean ± std over seeds (W = 1 is KD); dashed: the student alone; dotted:
    KD; stars: the ``val_accuracy`` rows; the thin line on the right axis is the target's
    training accuracy at each W.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scenarios = list(ds["scenarios"].items())
    fig, axes = _axes_grid(len(scenarios), plt)
    meta = ds["rows"]
    for ax, (sc_name, sc) in zip(axes, scenarios, strict=False):
        rows, ens = sc["summary"]["rows"], ds["ensembles"][sc["ensemble"]]
        ws = [float(_w(r, meta)) for r in ds["curve"]]
        means = [100 * rows[r]["test_mean"] for r in ds["curve"]]
        stds = [100 * rows[r]["test_std"] for r in ds["curve"]]
        ax.errorbar(ws, means, yerr=stds, marker="o", capsize=3, color="#d62728", label="WKD")
        for key, style, color, label in (("none", "--", "#555555", "none (student alone)"),
                                         ("kd", ":", "#1f77b4", "KD (W = 1)")):
            ax.axhline(100 * rows[key]["test_mean"], linestyle=style, color=color, label=label)
        for row, marker in zip(AUTO, ("*", "P"), strict=True):  # a little right of their W
            ax.errorbar([1.08 * float(_w(row, meta))], [100 * rows[row]["test_mean"]],
                        yerr=[100 * rows[row]["test_std"]], marker=marker, markersize=11,
                        linestyle="none", capsize=3, label=row)
        ax.axhline(100 * rows[PICKED]["test_mean"], linestyle="-.", color="#2ca02c",
                   label=PICKED)
        ax.set_xscale("log")
        ax.set_xticks(ws, [f"{w:g}" for w in ws])
        ax.minorticks_off()
        ax.set_xlabel("W (incorrect_weight)")
        ax.set_ylabel("test accuracy % (mean ± std over seeds)")
        ax.set_title(f"{name}: {sc_name}, student {_model(sc['student_model'])}", fontsize=10)
        twin = ax.twinx()
        twin.plot(ws, [100 * ens["targets"][r]["accuracy"] for r in ds["curve"]],
                  color="#bbbbbb", linewidth=1)
        twin.set_ylabel("target's train accuracy % (grey)", color="#888888", fontsize=8)
        twin.tick_params(labelsize=7, colors="#888888")
    for ax in axes[len(scenarios):]:
        ax.axis("off")
    axes[0].legend(fontsize=7, loc="best")
    return _save(fig, path)


def plot_tracks(result: Mapping[str, Any], path: Path) -> Path:
    """Test gain over KD against the target's training-accuracy gain (one point per W)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 5))
    markers = {"equal": "o", "unequal": "s"}
    for i, (name, ds) in enumerate(result["datasets"].items()):
        for sc in ds["scenarios"].values():
            ens = ds["ensembles"][sc["ensemble"]]
            curve = [r for r in ds["curve"] if r != "kd"]
            base = ens["targets"]["kd"]["accuracy"]
            xs = [100 * (ens["targets"][r]["accuracy"] - base) for r in curve]
            comps = [sc["summary"]["vs_kd"][r] for r in curve]
            ys = [100 * c["mean"] for c in comps]
            errs = [100 * c["std"] / math.sqrt(c["seeds"]) for c in comps]
            filled = sc["student"] == "same-size"
            ax.errorbar(xs, ys, yerr=errs, marker=markers.get(sc["ensemble"], "^"),
                        color=f"C{i}", linestyle="-", linewidth=0.8, capsize=2,
                        markerfacecolor=f"C{i}" if filled else "white",
                        label=f"{name} / {sc['ensemble']} / {sc['student']}")
    ax.axhline(0.0, color="black", linewidth=0.8)
    ax.set_xlabel("target's train accuracy minus the plain average's (points)")
    ax.set_ylabel("student test accuracy minus KD's (points, mean ± s.e.)")
    ax.set_title("WKD's gain over KD against how much it corrects the target\n"
                 "(one point per W; W falls from left to right)", fontsize=10)
    ax.legend(fontsize=7)
    return _save(fig, path)


def _save(fig: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_all(result: Mapping[str, Any], out: Path) -> list[Path]:
    """``wkd.json``, ``wkd.md`` and the charts of ``result`` in ``out``; their paths."""
    paths = [plot_dataset(name, ds, out / ds["plot"]) for name, ds in result["datasets"].items()]
    paths.append(plot_tracks(result, out / "wkd_tracks.png"))
    for name, text in (("wkd.json", json.dumps(result, indent=2)), ("wkd.md", markdown(result))):
        (out / name).write_text(text)
        paths.append(out / name)
    return paths


def render(out: Path) -> list[Path]:
    """Rebuild ``wkd.md`` and the charts in ``out`` from its ``wkd.json`` (no training)."""
    return write_all(json.loads((out / "wkd.json").read_text()), out)
