"""A sweep's trials as rows: the table (CSV and rich), and the best configuration.

A row holds the trial's configuration (method, W, T, alpha), its last reported metrics
(the sweep's metric is ``val_accuracy`` of its last epoch; for span data SQuAD ``val_f1``,
and the row then also has ``val_exact`` and ``best_val_f1``), the best epoch's score,
the epochs it ran (ASHA may stop it early) and what it cost: ``trial_seconds`` (wall time
inside the trial, measured there), ``train_seconds`` (its epochs' training steps),
``teacher_forward_examples`` and ``teacher_seconds``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, TextIO

from raykd.tune.space import METRIC, SPAN_METRIC, resolved

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
    "train_seconds",
    "teacher_forward_examples",
    "teacher_seconds",
    "status",
)
SPAN_COLUMNS = ("val_f1", "val_exact", "best_val_f1")  # span sweeps only, before "epochs"


def columns(metric: str = METRIC) -> tuple[str, ...]:
    """``trials.csv``'s columns: ``COLUMNS``, plus ``SPAN_COLUMNS`` for a span sweep."""
    if metric != SPAN_METRIC:
        return COLUMNS
    at = COLUMNS.index("epochs")
    return (*COLUMNS[:at], *SPAN_COLUMNS, *COLUMNS[at:])


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
    metric: str = METRIC,
) -> dict[str, Any]:
    """One table row from a trial's config, last metrics, per-epoch history and Tune status
    (``metric`` ``val_f1``: a span sweep's row, with its SQuAD columns)."""
    config = resolved(config)
    accs = [_number(h.get(METRIC)) for h in history if METRIC in h]
    done = int(metrics.get("training_iteration", len(history)) or 0)
    span = {}
    if metric == SPAN_METRIC:
        f1s = [_number(h.get(SPAN_METRIC)) for h in history if SPAN_METRIC in h]
        span = {"val_f1": _number(metrics.get("val_f1")),
                "val_exact": _number(metrics.get("val_exact")),
                "best_val_f1": max(f1s) if f1s else float("nan")}
    return {
        "trial_id": trial_id,
        "method": config.get("method"),
        "incorrect_weight": _number(config.get("incorrect_weight")),
        "temperature": _number(config.get("temperature")),
        "alpha": _number(config.get("alpha")),
        "val_accuracy": _number(metrics.get(METRIC)),
        "best_val_accuracy": max(accs) if accs else float("nan"),
        **span,
        "epochs": done,
        "train_loss": _number(metrics.get("train_loss")),
        "trial_seconds": _number(metrics.get("trial_seconds")),
        "train_seconds": _epoch_seconds(history),
        "teacher_forward_examples": int(metrics.get("teacher_forward_examples", 0) or 0),
        "teacher_seconds": _number(metrics.get("teacher_seconds")),
        "status": _status(tune_status, done, epochs, error),
    }


def _epoch_seconds(history: list[dict[str, Any]]) -> float:
    """A trial's own training time: the sum of its reported epochs' ``epoch_seconds`` (the
    training steps, without validation or Tune's reporting); NaN when none reported."""
    times = [_number(h.get("epoch_seconds")) for h in history if "epoch_seconds" in h]
    return float(sum(times)) if times else float("nan")


def grid_rows(grid: Any, *, epochs: int, statuses: dict[str, str],
              metric: str = METRIC) -> list[dict[str, Any]]:
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
                metric=metric,
            )
        )
    return sorted(rows, key=lambda r: r["trial_id"])


def best_row(rows: list[dict[str, Any]], metric: str = METRIC) -> dict[str, Any]:
    """The arg-max of ``metric`` (the first on ties); ValueError when no trial reported it.

    Not a user error: every trial failing is a bug or a broken cluster, so it keeps its
    traceback; the message names the trials' first status (their error, if any).
    """
    scored = [r for r in rows if not math.isnan(_number(r.get(metric)))]
    if not scored:
        first = f"; trial {rows[0]['trial_id']}: {rows[0]['status']}" if rows else ""
        raise ValueError(f"no trial reported {metric} ({len(rows)} trials{first})")
    return max(scored, key=lambda r: r[metric])


def write_csv(rows: list[dict[str, Any]], path: Path, metric: str = METRIC) -> Path:
    """The trials table as CSV (one row per trial, the columns of :func:`columns`)."""
    import pandas as pd

    pd.DataFrame(rows, columns=list(columns(metric))).to_csv(path, index=False)
    return path


def _cell(value: Any, spec: str = ".4f") -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "" if math.isnan(value) else format(value, spec)
    return str(value)


def _rank(row: dict[str, Any], metric: str = METRIC) -> float:
    """Sort key: best first, trials without a metric last."""
    value = _number(row.get(metric))
    return 1.0 if math.isnan(value) else -value


def print_sweep(result: dict[str, Any], file: TextIO | None = None) -> None:
    """Print a finished sweep (``sweep.json``): every trial, the best, the final student (on
    ``file``, default stdout)."""
    from rich.console import Console
    from rich.table import Table

    best_id, metric = result["best"]["trial_id"], result.get("metric") or METRIC
    span = metric == SPAN_METRIC
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
        *(("val F1", "val EM") if span else ()),
        "epochs",
        "secs",
        "teacher fwd",
        "status",
    )
    for head in heads:
        left = head in ("trial", "method", "status")
        table.add_column(head, justify="left" if left else "right", no_wrap=head != "status")
    for r in sorted(result["trials"], key=lambda r: _rank(r, metric)):
        best = r["trial_id"] == best_id
        table.add_row(
            ("*" if best else " ") + r["trial_id"],
            str(r["method"]),
            _cell(r["incorrect_weight"], ".3g"),
            _cell(r["temperature"], ".3g"),
            _cell(r["alpha"], ".3g"),
            _cell(r["val_accuracy"]),
            *((_cell(r.get("val_f1"), ".2f"), _cell(r.get("val_exact"), ".2f")) if span else ()),
            str(r["epochs"]),
            _cell(r["trial_seconds"], ".1f"),
            str(r["teacher_forward_examples"]),
            r["status"],
            style="bold" if best else None,
        )
    console = Console(file=file, width=max(124 if span else 100, Console(file=file).width))
    console.print(table)
    b = result["best"]
    console.print(
        f"best (*, arg-max of {metric}): method={b['method']} W={b['incorrect_weight']:g} "
        f"T={b['temperature']:g} alpha={b['alpha']:g} {metric}={b[metric]:.4f}"
    )
    final = result.get("final")
    if final:
        console.print(f"best student retrained on train+val: {_final_scores(result)} "
                      f"-> {final['checkpoint']}")
    console.print("stages (s): " + ", ".join(f"{k} {v:.1f}" for k, v in result["timings"].items()))
    console.print(
        f"table: {result['files']['trials']}  plots: {result['files']['heatmap']}, "
        f"{result['files']['alpha']}  result: {result['job_dir']}/sweep.json"
    )


def _final_scores(result: dict[str, Any]) -> str:
    """The final student's test scores beside the ensemble's: accuracy, or SQuAD F1/EM."""
    final, ensemble = result["final"], result.get("ensemble") or {}
    if final.get("span"):
        test, ens = final["span"]["test"], (ensemble.get("span") or {}).get("test")
        versus = f" (ensemble F1 {ens['f1']:.2f})" if ens else ""
        return f"test F1 {test['f1']:.2f}, EM {test['exact']:.2f}{versus}"
    versus = f" (ensemble {ensemble['test_accuracy']:.4f})" if ensemble else ""
    return f"test accuracy {final['test_accuracy']:.4f}{versus}"
