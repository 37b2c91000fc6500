"""The report of ``raykd bench speed``: the table, the targets met or missed (with a
reason drawn from the other rows), ``speed.md``, ``speed.json`` and the bar chart ``speed.png``.

Pure functions of the report mapping that :func:`raykd.bench.speed.run_speed_bench` builds
(no Ray, no torch).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from raykd.bench.speed_plan import ALPHA, TEMPERATURE
from raykd.bench.speed_small import small_lines
from raykd.console_text import markdown_table

BUSY = 0.25
"""Above this share of the CPU taken by other processes during a row, the report warns."""
TARGETS = (("c", "a", 0.9), ("c", "p", 0.95), ("ct", "a", 0.9), ("c0", "p", 0.97),
           ("c", "b", 2.0), ("d", "b", 1.0))
"""(row, baseline, minimum ratio of their median steady-state samples/s) on a 2-core machine."""


COLUMNS = ("row", "what", "samples/s", "vs (a)", "min-max", "rounds", "train s", "start-up s",
           "wall s", "peak mem MB", "val acc", "other CPU")


def table_rows(report: dict[str, Any]) -> list[list[str]]:
    """One table line per row: median samples/s, its ratio to (a), spread, times, memory."""
    base = report["rows"].get("a", {}).get("samples_per_s")
    lines = []
    for key, r in report["rows"].items():
        if "error" in r:
            lines.append([f"({key})", f"{r.get('label', '')}: failed ({r['error']})"]
                         + ["-"] * (len(COLUMNS) - 2))
            continue
        sps, stats = r["samples_per_s"], r.get("spread")
        spread = f"{stats['min']:,.0f}-{stats['max']:,.0f}" if stats else "-"
        rounds = f"{stats['n']}" + (f" ({r['failed_rounds']} failed)" if r.get("failed_rounds")
                                    else "") if stats else "1"
        lines.append([f"({key})", r["label"], f"{sps:,.0f}", f"{sps / base:.2f}" if base else "-",
                      spread, rounds, f"{r['epoch_seconds']:.1f}", f"{r['startup_seconds']:.1f}",
                      f"{r['wall_seconds']:.1f}", f"{r['peak_mem_mb']:,.0f}",
                      f"{r['val_accuracy']:.4f}", f"{r.get('other_cpu_share', float('nan')):.0%}"])
    return lines


def check_targets(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target ratio, met or missed, with a one-line reason drawn from the measurements."""
    rows, out = report["rows"], []
    for row, base, need in TARGETS:
        r, b = rows.get(row, {}), rows.get(base, {})
        value = None
        if "samples_per_s" in r and "samples_per_s" in b:
            value = r["samples_per_s"] / b["samples_per_s"]
        met = value is not None and value >= need
        missing = [f"({k})" for k in (row, base) if k not in rows]
        reason = ("" if met else _reason(row, base, rows) if value
                  else f"{' and '.join(missing)} not measured in this run" if missing
                  else "a row failed; see the table")
        out.append({"ratio": f"({row})/({base})", "value": value, "target": need, "met": met,
                    "reason": reason})
    return out


def _ms(r: dict[str, Any]) -> float:
    return 1000 * r["batch_size"] / r["samples_per_s"]


def _reason(row: str, base: str, rows: dict[str, dict[str, Any]]) -> str:
    """One line on why ``row`` missed its target against ``base``, from the other rows."""
    a, b, c, c0 = (rows.get(k, {}) for k in ("a", "b", "c", "c0"))
    have = all("samples_per_s" in r for r in (a, b, c, c0))
    if row == "c" and base == "b" and have and a["samples_per_s"] < 2 * b["samples_per_s"]:
        return (f"(c) cannot beat the student alone and (a)/(b) is only "
                f"{a['samples_per_s'] / b['samples_per_s']:.2f}: the 3 teachers' forwards are "
                f"{b['phase_ms']['teachers']:.1f} of {_ms(b):.1f} ms per step in (b)")
    if row == "c" and have:
        return (f"{_ms(c):.1f} ms per step vs {_ms(a):.1f} for the student alone: raykd's loop "
                f"without Ray (c0) adds {_ms(c0) - _ms(a):+.1f} ms (KD loss, logit slicing), the "
                f"Ray student worker {_ms(c) - _ms(c0):+.1f} ms more")
    if row == "d" and "samples_per_s" in b:
        actor = rows.get("da", {})
        than = (f"; with one ensemble actor instead (da) {_ms(actor):.1f} ms"
                if "samples_per_s" in actor else "")
        return (f"{_ms(rows['d']):.1f} ms per step vs {_ms(b):.1f} in (b) for the same work "
                f"(+ augmentation, {a.get('augment_ms', float('nan')):.1f} ms): the teachers in "
                f"the student's process, a thread each side on {os.cpu_count()} cores{than}")
    return f"{_ms(rows[row]):.1f} ms per step vs {_ms(rows[base]):.1f} ms"


NOTE = ("samples/s: steady state after a warm-up (plain rows: untimed steps first; Ray rows "
        "and (c0): an untimed first epoch), steps x batch / time of the timed steps (the "
        "worker's own history); the median of the row's interleaved rounds, min-max beside "
        "it; every ratio (vs (a), the targets) is one of medians; the other columns are the "
        "median round's. start-up: wall minus training (Ray: worker-group start, imports, data, "
        "validation, checkpoint, teardown; plain: interpreter, imports, data, models, "
        "validation). Peak memory: plain rows the peak RSS (VmHWM) of their own process; Ray "
        "rows the summed RSS of the Ray worker processes (train controller, workers, teacher "
        "actors; shared object-store pages count in each), head processes apart.")


def markdown(report: dict[str, Any]) -> str:
    """The report as Markdown: the table, the targets, the one-off costs and the profile."""
    s, rows = report.get("setup", {}), report["rows"]
    limit = f", train_limit {report['train_limit']}" if report.get("train_limit") else ""
    lines = ["# raykd bench speed", "",
             f"MNIST, {report['steps']} steps x batch {report['batch_size']} per row{limit}; 3 CNN "
             f"width-8 teachers, CNN width-8 student, KD T={TEMPERATURE:g} alpha={ALPHA:g}; "
             f"{report.get('cpus')} CPUs; {report.get('created_at', '')}; thread environment: "
             f"{report.get('env') or 'defaults'}; {report.get('rounds', 1)} interleaved "
             f"rounds, {report.get('warmup_steps', 0)} warm-up steps per plain row.", "",
             markdown_table(list(COLUMNS), table_rows(report)), "", NOTE, ""]
    if report.get("schedule"):
        order = "; ".join(" ".join(f"({k})" for k in keys) for keys in report["schedule"])
        lines += [f"Order of the rounds: {order}.", ""]
    if report.get("remeasured"):
        when = ", ".join(f"({k}) {rows[k].get('measured_at', '?')[11:19]}"
                         for k in report["remeasured"] if k in rows)
        lines += [f"Re-measured after the first run (UTC): {when}.", ""]
    lines += ["## Targets", ""]
    for t in check_targets(report):
        got = "n/a" if t["value"] is None else f"{t['value']:.3f}"  # 0.947 is not 0.95
        verdict = "met" if t["met"] else f"**missed**: {t['reason']}"
        lines.append(f"- {t['ratio']} = {got} (target >= {t['target']:g}): {verdict}")
    lines += _cost_lines(s, rows)
    if report.get("small"):
        lines += small_lines(report["small"])
    profile = [[f"({k})", *(f"{v:.1f}" for v in r["phase_ms"].values()), f"{_ms(r):.1f}"]
               for k, r in rows.items() if "phase_ms" in r]
    lines += ["", "## Per-step profile of the plain rows (ms)", "",
              markdown_table(["row", "data", "teachers", "forward", "loss", "backward+step",
                              "total"], profile)]
    if "augment_ms" in rows.get("a", {}):
        lines.append(f"\naugment_images: {rows['a']['augment_ms']:.1f} ms per batch (row d only).")
    setup_mb = ", ".join(f"({k}) {r['setup_peak_rss_mb']:,.0f} MB" for k, r in rows.items()
                         if "setup_peak_rss_mb" in r)
    if setup_mb:
        lines.append(f"\nPlain rows' peak RSS before their loop (interpreter, torch, data, "
                     f"models): {setup_mb}.")
    lines += ["", "other CPU: the share of the machine's CPU that other processes took during the "
                  "row (0% = the row had the machine to itself; more disturbs its timings)."]
    if any(r.get("other_cpu_share", 0.0) > BUSY for r in rows.values()):
        lines.append(f"**Warning**: other processes took more than {BUSY:.0%} of the CPU during "
                     f"some rows; their timings are disturbed, rerun on a quiet machine.")
    return "\n".join([*lines, ""])


def _cost_lines(s: dict[str, Any], rows: dict[str, dict[str, Any]]) -> list[str]:
    """The section on one-off costs: ray.init, teachers, logit cache, Ray start-up per row."""
    lines = ["", "## One-off and fixed costs (not per step)", ""]
    if s:
        acc = ", ".join(f"{a:.4f}" for a in s["teacher_test_accuracy"])
        lines += [f"- ray.init: {s['ray_init_seconds']:.1f} s (once per bench)",
                  f"- teachers: "
                  f"{_once(s, 'teacher_train_seconds', 'teachers_reused', 'teachers_trained_at')}",
                  f"- logit cache build, paid once per teacher and dataset: "
                  f"{_once(s, 'cache_build_seconds', 'cache_reused', 'cache_built_at')}",
                  f"- teachers' test accuracy {acc}; ensemble {s['ensemble_test_accuracy']:.4f}"]
    for key, r in rows.items():
        if r.get("kind") == "ray":
            t = r["timings"]
            procs = ", ".join(f"{n.removeprefix('ray::')} {mb:,.0f}"
                              for n, mb in r.get("peak_mem_by_process", {}).items())
            before = t.get("teacher_start", 0) + t.get("teacher_logits", 0)
            lines.append(f"- ({key}) student start-up and wind-down {r['startup_seconds']:.1f} s "
                         f"(its wall minus its timed epochs); before it, teachers "
                         f"{before:.1f} s (actors started only when a logit is not cached); "
                         f"peak MB: {procs}; Ray head + idle workers {r['head_mem_mb']:,.0f} MB")
    return lines


def _once(s: dict[str, Any], seconds: str, reused: str, when: str) -> str:
    if s.get(seconds) is None:
        return "reused (built before this bench recorded it)"
    took = f"{s[seconds]:.1f} s"
    return f"reused, built in {took} at {s[when]}" if s[reused] else f"built now in {took}"


def write_report(report: dict[str, Any], out: Path) -> None:
    """Print the table; write ``speed.md``, ``speed.json`` and the bar chart ``speed.png``."""
    from rich.console import Console
    from rich.table import Table

    (out / "speed.json").write_text(json.dumps(report, indent=2))
    (out / "speed.md").write_text(markdown(report))
    table = Table(title=f"raykd bench speed: {report['steps']} steps x {report['batch_size']}")
    for col in COLUMNS:
        table.add_column(col, justify="left" if col in ("row", "what") else "right")
    for line in table_rows(report):
        table.add_row(*line)
    console = Console(width=160)
    console.print(table)
    for t in check_targets(report):
        got = "n/a" if t["value"] is None else f"{t['value']:.3f}"
        console.print(f"{t['ratio']} = {got} (target >= {t['target']:g}): "
                      f"{'met' if t['met'] else 'MISSED: ' + t['reason']}")
    if report.get("small"):
        for key, r in report["small"]["runners"].items():
            console.print(f"small job, runner {key}: student stage per student / plain training "
                          f"= {r['ratio']:.2f} (target <= {report['small']['target']:g})")
    bar_chart(report, out / "speed.png")
    console.print(f"wrote {out / 'speed.md'}, speed.json, speed.png")


def bar_chart(report: dict[str, Any], path: Path) -> None:
    """Horizontal bars of steady-state samples/s per row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    items = [(f"({k}) {r['label']}", r["samples_per_s"]) for k, r in report["rows"].items()
             if "samples_per_s" in r]
    fig, ax = plt.subplots(figsize=(10, 0.5 * len(items) + 1.2))
    bars = ax.barh([n for n, _ in items][::-1], [v for _, v in items][::-1], color="#4c72b0")
    ax.bar_label(bars, fmt="%.0f", padding=3)
    ax.set_xlabel("samples/s (steady state, higher is better)")
    ax.set_title(f"raykd bench speed: {report['steps']} steps x batch {report['batch_size']}, "
                 f"{report.get('cpus')} CPUs")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
