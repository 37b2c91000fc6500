"""A sweep's trials as rows: the table (CSV and rich), and the best configuration.

A row holds the trial's configuration (method, W, T, alpha), its last reported metrics
(``val_accuracy`` of its last epoch is the sweep's metric), the best epoch's accuracy,
the epochs it ran (ASHA may stop it early) and what it cost: ``trial_seconds`` (wall time
inside the trial, measured there), ``teacher_forward_examples`` and ``teacher_seconds``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, TextIO

from raykd.tune.space import METRIC, resolved

COLUMNS = (
    "trial_id",
    "method",
    "incorrect_weight",
    "temperature",
    "alpha",
    "val_accuracy",
    "best_val_accuracy",
    "epochs",
    "train_loss",
    "trial_seconds",
    "teacher_forward_examples",
    "teacher_seconds",
    "status",
)


STATUS = {"PENDING": "not started", "RUNNING": "unfinished", "PAUSED": "unfinished"}
UNFINISHED = ("PENDING", "RUNNING", "PAUSED")


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def _status(tune_status: str, done: int, epochs: int, error: str | None) -> str:
    """A readable status: done, stopped early (ASHA, time budget), not started, error."""
    if error:
        return f"error: {error.splitlines()[0][:120]}"
    if tune_status in STATUS:
        return STATUS[tune_status]
    return "done" if done >= epochs else "stopped early"


def trial_row(
    config: dict[str, Any],
    metrics: dict[str, Any],
    history: list[dict[str, Any]],
    *,
    trial_id: str,
    epochs: int,
    error: str | None,
    tune_status: str = "TERMINATED",
) -> dict[str, Any]:
    """One table row from a trial's config, last metrics, per-epoch history and Tune status."""
    config = resolved(config)
    accs = [_number(h.get(METRIC)) for h in history if METRIC in h]
    done = int(metrics.get("training_iteration", len(history)) or 0)
    return {
        "trial_id": trial_id,
        "method": config.get("method"),
        "incorrect_weight": _number(config.get("incorrect_weight")),
        "temperature": _number(config.get("temperature")),
        "alpha": _number(config.get("alpha")),
        "val_accuracy": _number(metrics.get(METRIC)),
        "best_val_accuracy": max(accs) if accs else float("nan"),
        "epochs": done,
        "train_loss": _number(metrics.get("train_loss")),
        "trial_seconds": _number(metrics.get("trial_seconds")),
        "teacher_forward_examples": int(metrics.get("teacher_forward_examples", 0) or 0),
        "teacher_seconds": _number(metrics.get("teacher_seconds")),
        "status": _status(tune_status, done, epochs, error),
    }


def grid_rows(grid: Any, *, epochs: int, statuses: dict[str, str]) -> list[dict[str, Any]]:
    """Rows of every trial in a Tune ``ResultGrid``, ordered by trial id.

    ``statuses`` maps trial ids to Tune's trial status (``TERMINATED``, ``ERROR``,
    ``PENDING``, ...), which a ``Result`` does not carry.
    """
    rows = []
    for result in grid:
        metrics = dict(result.metrics or {})
        frame = result.metrics_dataframe
        history = frame.to_dict("records") if frame is not None else []
        trial_id = str(metrics.get("trial_id") or Path(result.path).name.removeprefix("trial_"))
        error = None if result.error is None else f"{type(result.error).__name__}: {result.error}"
        rows.append(
            trial_row(
                dict(result.config or {}),
                metrics,
                history,
                trial_id=trial_id,
                epochs=epochs,
                error=error,
                tune_status=statuses.get(trial_id, "TERMINATED"),
            )
        )
    return sorted(rows, key=lambda r: r["trial_id"])


def best_row(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The arg-max of ``val_accuracy`` (the first on ties); ValueError when no trial reported.

    Not a user error: every trial failing is a bug or a broken cluster, so it keeps its
    traceback; the message names the trials' first status (their error, if any).
    """
    scored = [r for r in rows if not math.isnan(r[METRIC])]
    if not scored:
        first = f"; trial {rows[0]['trial_id']}: {rows[0]['status']}" if rows else ""
        raise ValueError(f"no trial reported {METRIC} ({len(rows)} trials{first})")
    return max(scored, key=lambda r: r[METRIC])


def write_csv(rows: list[dict[str, Any]], path: Path) -> Path:
    """The trials table as CSV (one row per trial, the columns of ``COLUMNS``)."""
    import pandas as pd

    pd.DataFrame(rows, columns=list(COLUMNS)).to_csv(path, index=False)
    return path


def _cell(value: Any, spec: str = ".4f") -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "" if math.isnan(value) else format(value, spec)
    return str(value)


def _rank(row: dict[str, Any]) -> float:
    """Sort key: best first, trials without a metric last."""
    value = _number(row[METRIC])
    return 1.0 if math.isnan(value) else -value


def print_sweep(result: dict[str, Any], file: TextIO | None = None) -> None:
    """Print a finished sweep (``sweep.json``): every trial, the best, the final student (on
    ``file``, default stdout)."""
    from rich.console import Console
    from rich.table import Table

    best_id = result["best"]["trial_id"]
    table = Table(
        title=f"raykd sweep {result['job']}: {len(result['trials'])} trials "
        f"({result['sweep']['searcher']}, {result['sweep']['scheduler']})"
    )
    heads = (
        "trial",
        "method",
        "W",
        "T",
        "alpha",
        "val acc",
        "epochs",
        "secs",
        "teacher fwd",
        "status",
    )
    for head in heads:
        left = head in ("trial", "method", "status")
        table.add_column(head, justify="left" if left else "right", no_wrap=head != "status")
    for r in sorted(result["trials"], key=_rank):
        best = r["trial_id"] == best_id
        table.add_row(
            ("*" if best else " ") + r["trial_id"],
            str(r["method"]),
            _cell(r["incorrect_weight"], ".3g"),
            _cell(r["temperature"], ".3g"),
            _cell(r["alpha"], ".3g"),
            _cell(r[METRIC]),
            str(r["epochs"]),
            _cell(r["trial_seconds"], ".1f"),
            str(r["teacher_forward_examples"]),
            r["status"],
            style="bold" if best else None,
        )
    console = Console(file=file, width=max(100, Console(file=file).width))
    console.print(table)
    b = result["best"]
    console.print(
        f"best (*, arg-max of {METRIC}): method={b['method']} W={b['incorrect_weight']:g} "
        f"T={b['temperature']:g} alpha={b['alpha']:g} {METRIC}={b[METRIC]:.4f}"
    )
    final = result.get("final")
    if final:
        ensemble = result.get("ensemble") or {}
        versus = f" (ensemble {ensemble['test_accuracy']:.4f})" if ensemble else ""
        console.print(
            f"best student retrained on train+val: test accuracy {final['test_accuracy']:.4f}"
            f"{versus} -> {final['checkpoint']}"
        )
    console.print("stages (s): " + ", ".join(f"{k} {v:.1f}" for k, v in result["timings"].items()))
    console.print(
        f"table: {result['files']['trials']}  plots: {result['files']['heatmap']}, "
        f"{result['files']['alpha']}  result: {result['job_dir']}/sweep.json"
    )
