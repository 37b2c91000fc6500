"""The tables of ``wkd.md`` (``raykd bench wkd``): how a cell is written (a paired
difference as mean ± std in points, wins/ties/losses and its p), the teachers and their
targets, what the student gets per scenario, and each scenario's W curve."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from raykd.bench.wkd_stats import PICKED

# --- formatting -----------------------------------------------------------------------


def pct(x: float) -> str:
    return f"{100 * x:.2f}"


def points(x: float) -> str:
    return f"{100 * x:+.2f}"


def p_value(p: float | None) -> str:
    if p is None:
        return "-"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def wtl(c: Mapping[str, Any]) -> str:
    return f"{c['wins']}/{c['ties']}/{c['losses']}"


def cell(c: Mapping[str, Any]) -> str:
    """``+0.42 ± 0.20 (5/0/1, p=0.012)``: mean ± std in points, wins/ties/losses, t-test p."""
    return f"{points(c['mean'])} ± {100 * c['std']:.2f} ({wtl(c)}, p={p_value(c['t_p'])})"


def _model(model: Mapping[str, Any]) -> str:
    if model["name"] == "mlp":
        return f"MLP {list(model['hidden'])}"
    return str(model["name"])


def _w(row: str, meta: Mapping[str, Any]) -> str:
    info = meta.get(row)
    if info is None or info["method"] == "none":
        return "-"
    return "1" if info["method"] == "kd" else f"{info['incorrect_weight']:g}"


# --- tables -----------------------------------------------------------------------------


def teacher_table(result: Mapping[str, Any]) -> list[str]:
    """Per dataset and ensemble: the teachers, the ensemble, where WKD can act, the targets."""
    lines = [
        "| dataset | ensemble | teachers (test %) | val-accuracy weights | ensemble test % "
        "| ensemble − best teacher | some but not all wrong (train) | all wrong (train) "
        "| target train acc: KD → W=0.5 → W=0.05 | KD (val_accuracy) target |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, ds in result["datasets"].items():
        for ens_name, ens in ds["ensembles"].items():
            teachers = ", ".join(
                f"{_model(t['model'])} {pct(a)}"
                for t, a in zip(ens["teachers"], ens["test_accuracy"], strict=True))
            weights = ", ".join(f"{w:.2f}" for w in ens["val_accuracy_weights"])
            tg, dis = ens["targets"], ens["disagreement"]["train"]
            lines.append(
                f"| {name} | {ens_name} | {teachers} | {weights} | "
                f"{pct(ens['ensemble_test_accuracy'])} | {points(ensemble_gap(ens))} | "
                f"{pct(dis['some_wrong'])}% | "
                f"{pct(dis['all_wrong'])}% | {pct(tg['kd']['accuracy'])} → "
                f"{pct(tg['wkd W=0.5']['accuracy'])} → {pct(tg['wkd W=0.05']['accuracy'])} | "
                f"{pct(tg['kd (val_accuracy)']['accuracy'])} |")
    return lines


AUTO = ("kd (val_accuracy)", "wkd W=0.75 (val_accuracy)")


def ensemble_gap(ens: Mapping[str, Any]) -> float:
    """The plain average's test accuracy minus its best teacher's (< 0: weak teachers drag)."""
    return ens["ensemble_test_accuracy"] - max(ens["test_accuracy"])


def summary_table(result: Mapping[str, Any]) -> list[str]:
    """Per scenario: the student alone, KD's gain, each way of setting W against KD (and the
    W picked on validation against the student alone)."""
    lines = [
        "| dataset / ensemble / student | none % | KD % | KD − none | best fixed W (test) − KD "
        f"| {PICKED} − KD | {PICKED} − none | {AUTO[0]} − KD | {AUTO[1]} − KD |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, ds in result["datasets"].items():
        for sc_name, sc in ds["scenarios"].items():
            s = sc["summary"]
            best = s["best_test"]
            best_cell = "(W = 1 is best)" if best == "kd" else (
                f"W={_w(best, ds['rows'])}: {cell(s['vs_kd'][best])}")
            lines.append(
                f"| {name} / {sc_name} | {pct(s['rows']['none']['test_mean'])} | "
                f"{pct(s['rows']['kd']['test_mean'])} | {cell(s['vs_none']['kd'])} | {best_cell} | "
                f"{cell(s['vs_kd'][PICKED])} | {cell(s['vs_none'][PICKED])} | "
                f"{cell(s['vs_kd'][AUTO[0]])} | "
                f"{cell(s['vs_kd'][AUTO[1]])} |")
    return lines


def curve_table(sc: Mapping[str, Any], ens: Mapping[str, Any],
                meta: Mapping[str, Any]) -> list[str]:
    """A scenario's W curve: each row's target, test accuracy, and its paired differences."""
    s = sc["summary"]
    lines = [
        "| row | W | target acc on train % | target p(gold) | test acc % (mean ± std) | "
        "− KD (points, mean ± std) | W/T/L vs KD | p (t / Wilcoxon) | − none (points) "
        "| W/T/L vs none | p (t / Wilcoxon) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row, r in s["rows"].items():
        target = ens["targets"].get(row)
        t_acc = pct(target["accuracy"]) if target else "-"
        t_p = f"{target['p_gold']:.3f}" if target else "-"
        kd, none = s["vs_kd"].get(row), s["vs_none"].get(row)
        kd_cells = ("-", "-", "-") if kd is None else (
            f"{points(kd['mean'])} ± {100 * kd['std']:.2f}", wtl(kd),
            f"{p_value(kd['t_p'])} / {p_value(kd['wilcoxon_p'])}")
        none_cells = ("-", "-", "-") if none is None else (
            f"{points(none['mean'])} ± {100 * none['std']:.2f}", wtl(none),
            f"{p_value(none['t_p'])} / {p_value(none['wilcoxon_p'])}")
        name = f"**{row}**" if row in (PICKED, *AUTO) else row
        lines.append(f"| {name} | {_w(row, meta)} | {t_acc} | {t_p} | {pct(r['test_mean'])} ± "
                     f"{pct(r['test_std'])} | {' | '.join(kd_cells)} | {' | '.join(none_cells)} |")
    picks = ", ".join(f"W={_w(p, meta)}" for p in s["rows"][PICKED]["picked"])
    lines += ["", f"{PICKED}, per seed: {picks}. Highest mean validation accuracy: "
              f"{s['best_val']} (W={_w(s['best_val'], meta)}); highest mean test accuracy "
              f"(oracle): {s['best_test']} (W={_w(s['best_test'], meta)})."]
    return lines
