"""Human-readable output of a job's result: the table printed at the end of ``raykd run``."""

from __future__ import annotations

from typing import Any


def result_rows(result: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(model, val accuracy, test accuracy, seconds) for teachers, ensemble and students."""
    rows = [
        (f"teacher {t['index']} ({t['model']['name']})", f"{t['val_accuracy']:.4f}", f"{t['test_accuracy']:.4f}",
         f"{t['train_seconds']:.1f}" if t["trained_by_raykd"] else "checkpoint")
        for t in result.get("teachers", [])
    ]
    ens = result.get("ensemble")
    if ens:
        rows.append((f"ensemble of {len(result['teachers'])}", f"{ens['val_accuracy']:.4f}",
                     f"{ens['test_accuracy']:.4f}", ""))
    for s in result.get("students", []):
        secs = sum(g["seconds"] for g in s["generations"])
        rows.append((f"student: {s['label']}", f"{s['val_accuracy']:.4f}", f"{s['test_accuracy']:.4f}", f"{secs:.1f}"))
        if "ban_test_accuracy" in s:
            rows.append((f"  BAN ensemble ({len(s['generations'])} gen)", "", f"{s['ban_test_accuracy']:.4f}", ""))
    return rows


def print_result(result: dict[str, Any]) -> None:
    """Print the accuracy table and the stage timings."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"raykd job {result.get('job')} on {result['dataset']['name']} "
                        f"(test: {result['dataset']['test']} examples)")
    for col in ("model", "val acc", "test acc", "train s"):
        table.add_column(col, justify="left" if col == "model" else "right")
    for row in result_rows(result):
        table.add_row(*row)
    console = Console()
    console.print(table)
    timings = result.get("timings", {})
    console.print("stages (s): " + ", ".join(f"{k} {v:.1f}" for k, v in timings.items()))
    console.print(f"result: {result.get('job_dir')}/result.json")


def markdown_table(headers: list[str], rows: list[list[Any]]) -> str:
    """A GitHub-flavoured Markdown table."""
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)
