"""The text raykd prints on the console about a job: the result table at the end of
``raykd run`` (:func:`print_result`), one line per event (:func:`event_line`, for the
console's progress and ``raykd follow``), and Markdown tables for the benchmarks' reports."""

from __future__ import annotations

from typing import Any, TextIO

__all__ = ["dataset_lines", "event_line", "markdown_table", "print_result", "result_rows",
           "score_column"]


def result_rows(result: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(model, val accuracy, test accuracy, seconds) for teachers, ensemble and students."""
    rows = [
        (f"teacher {t['index']} ({t['model']['name']})", f"{t['val_accuracy']:.4f}",
         f"{t['test_accuracy']:.4f}",
         f"{t['train_seconds']:.1f}" if t["trained_by_raykd"] else "checkpoint")
        for t in result.get("teachers", [])
    ]
    ens = result.get("ensemble")
    if ens:
        rows.append((f"ensemble of {len(result['teachers'])}", f"{ens['val_accuracy']:.4f}",
                     f"{ens['test_accuracy']:.4f}", ""))
    for s in result.get("students", []):
        secs = sum(g["seconds"] for g in s["generations"])
        rows.append((f"student: {s['label']}", f"{s['val_accuracy']:.4f}",
                     f"{s['test_accuracy']:.4f}", f"{secs:.1f}"))
        if s.get("ban_test_accuracy") is not None:
            rows.append((f"  BAN ensemble ({len(s['generations'])} gen)", "",
                         f"{s['ban_test_accuracy']:.4f}", ""))
    return rows


def _score(row: dict[str, Any]) -> str:
    """A row's text score: macro-F1 (classification), or SQuAD EM / F1 (span extraction)."""
    span = row.get("span")
    if isinstance(span, dict) and isinstance(span.get("test"), dict):
        return f"{span['test']['exact']:.1f} / {span['test']['f1']:.1f}"
    f1 = row.get("test_macro_f1")
    return "" if f1 is None else f"{f1:.4f}"


def score_column(result: dict[str, Any]) -> tuple[str, list[str]] | None:
    """The extra column of a text job, aligned with :func:`result_rows`: ``test F1`` (macro)
    or ``test EM / F1`` (SQuAD v2.0, percent); None for other jobs."""
    values = [_score(t) for t in result.get("teachers", [])]
    if result.get("ensemble"):
        values.append(_score(result["ensemble"]))
    for s in result.get("students", []):
        values.append(_score(s))
        if s.get("ban_test_accuracy") is not None:
            values.append("")
    if not any(values):
        return None
    spans = any(isinstance(r.get("span"), dict) for r in result.get("teachers", []))
    return ("test EM / F1" if spans else "test F1"), values


def print_result(result: dict[str, Any], file: TextIO | None = None) -> None:
    """Print the accuracy table and the stage timings (on ``file``, default stdout)."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"raykd job {result.get('job')} on {result['dataset']['name']} "
                        f"(test: {result['dataset']['test']} examples)")
    extra = score_column(result)
    columns = ["model", "val acc", "test acc", *([extra[0]] if extra else []), "train s"]
    for col in columns:
        table.add_column(col, justify="left" if col == "model" else "right")
    for i, row in enumerate(result_rows(result)):
        table.add_row(*row[:3], *([extra[1][i]] if extra else []), row[3])
    console = Console(file=file)
    console.print(table)
    for line in dataset_lines(result.get("dataset", {})):
        console.print(line, highlight=False)
    timings = result.get("timings", {})
    console.print("stages (s): " + ", ".join(f"{k} {v:.1f}" for k, v in timings.items()))
    console.print(f"result: {result.get('job_dir')}/result.json")


def dataset_lines(dataset: dict[str, Any]) -> list[str]:
    """The class names, and a table's columns used and dropped (empty for unnamed classes)."""
    lines = []
    names = dataset.get("class_names")
    if names:
        lines.append("classes: " + ", ".join(f"{i} {n}" for i, n in enumerate(names)))
    table = dataset.get("table")
    if table:
        lines.append(f"label {table['label_column']!r}; columns used: "
                     + ", ".join(f"{c['column']} ({c['kind']})" for c in table["used"]))
        lines += [f"column dropped: {d['column']!r}: {d['reason']}" for d in table["dropped"]]
    return lines


def markdown_table(headers: list[str], rows: list[list[Any]]) -> str:
    """A GitHub-flavoured Markdown table."""
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def event_line(event: Any) -> str | None:
    """One human line for an event (None for events the console does not show)."""
    t = event.type
    if t == "job_started":
        again = f", attempt {event.attempt} (resuming)" if event.attempt > 1 else ""
        return (f"job {event.job_id} started{again}: {event.students} students, "
                f"{event.total_epochs} epochs")
    if t == "message":
        return event.text
    if t == "stage_finished":
        return f"stage {event.stage} done in {event.seconds:.1f} s"
    if t == "epoch":
        m = event.metrics
        val = m.get("val_accuracy")
        return (f"[{event.label or event.student}] epoch {event.epoch}/{event.epochs} loss "
                f"{m.get('train_loss', float('nan')):.4f} val_acc "
                f"{'n/a' if val is None else f'{val:.4f}'} "
                f"({m.get('samples_per_s', 0):.0f} samples/s)")
    if t == "student_restarted":
        return (f"student {event.student} workers failed ({event.error}); Ray Train restarts "
                "them from the last checkpoint")
    if t == "trial":  # a span sweep's trials are ranked by SQuAD val F1 (percent)
        name = "val_f1" if "val_f1" in event.metrics else "val_accuracy"
        metric = event.metrics.get(name)
        return f"trial {event.trial_id}: {name} {metric if metric is None else f'{metric:.4f}'}"
    if t == "job_failed":
        return f"job failed ({event.kind}): {event.message}"
    if t == "job_finished":
        return f"job finished in {event.seconds:.1f} s: {event.result}"
    return None
