"""The sweep's two figures (matplotlib, Agg backend, PNG).

- ``heatmap_w_t.png``: validation accuracy over (W, T), the mean over the other swept
  parameters. W acts only in WKD, so when the sweep mixes methods the map keeps the wkd
  trials (the title says so). One axis varying gives a line plot of that axis; neither
  varying gives a single labelled cell; continuous values from random search (more than
  ``MAX_CELLS`` distinct values on an axis) give a scatter coloured by accuracy.
- ``alpha.png``: validation accuracy against alpha, one marker per trial and the mean per
  alpha value as a line, one colour per method.

A span sweep plots its own metric, SQuAD ``val_f1`` (percent), in place of the accuracy.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from raykd.tune.space import METRIC

MAX_CELLS = 12
LABELS = {"incorrect_weight": "W (incorrect_weight)", "temperature": "T (temperature)"}


def _frame(rows: list[dict[str, Any]], metric: str) -> Any:
    import pandas as pd

    frame = pd.DataFrame(rows)
    if frame.empty or metric not in frame:
        return frame
    return frame[frame[metric].notna()]


def _figure() -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(6.4, 4.8), dpi=100)


def _save(fig: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _wt_subset(frame: Any) -> tuple[Any, str]:
    """The trials the W x T map shows, and the note for its title."""
    methods = set(frame["method"])
    if len(methods) > 1 and "wkd" in methods:
        return frame[frame["method"] == "wkd"], "wkd trials (W acts only in WKD)"
    return frame, f"method {', '.join(sorted(map(str, methods)))}"


def _grid(ax: Any, fig: Any, table: Any, metric: str) -> None:
    """An annotated heatmap of a pivot table (rows T, columns W)."""
    values = table.to_numpy(dtype=float)
    image = ax.imshow(values, cmap="viridis", origin="lower", aspect="auto")
    ax.set_xticks(range(len(table.columns)), [f"{v:g}" for v in table.columns])
    ax.set_yticks(range(len(table.index)), [f"{v:g}" for v in table.index])
    finite = values[np.isfinite(values)]
    middle = float(finite.mean()) if finite.size else 0.0
    for (i, j), v in np.ndenumerate(values):
        if np.isfinite(v):
            ax.text(
                j,
                i,
                f"{v:.4f}" if v <= 1 else f"{v:.2f}",
                ha="center",
                va="center",
                fontsize=8,
                color="white" if v < middle else "black",
            )
    fig.colorbar(image, ax=ax, label=f"mean {metric}")


def _line(ax: Any, frame: Any, axis: str, fixed: str, metric: str) -> str:
    """Accuracy against the one axis that varies; returns the title note."""
    mean = frame.groupby(axis)[metric].mean()
    ax.plot(mean.index, mean.to_numpy(), marker="o", label="mean")
    ax.scatter(frame[axis], frame[metric], alpha=0.4, label="trials")
    ax.set_xlabel(LABELS[axis])
    ax.set_ylabel(metric)
    ax.legend()
    return f"{LABELS[fixed].split()[0]} fixed at {frame[fixed].iloc[0]:g}"


def heatmap_w_t(rows: list[dict[str, Any]], path: Path, metric: str = METRIC) -> Path:
    """Validation accuracy over W (x) and T (y); see the module docstring for the cases."""
    frame = _frame(rows, metric)
    fig, ax = _figure()
    if frame.empty:
        ax.text(0.5, 0.5, f"no trial reported {metric}", ha="center", va="center")
        ax.set_axis_off()
        return _save(fig, path)
    frame, note = _wt_subset(frame)
    n_w, n_t = frame["incorrect_weight"].nunique(), frame["temperature"].nunique()
    if n_w > MAX_CELLS or n_t > MAX_CELLS:
        points = ax.scatter(
            frame["incorrect_weight"], frame["temperature"], c=frame[metric], cmap="viridis"
        )
        fig.colorbar(points, ax=ax, label=metric)
    elif n_w > 1 and n_t == 1:
        note += "; " + _line(ax, frame, "incorrect_weight", "temperature", metric)
    elif n_t > 1 and n_w == 1:
        note += "; " + _line(ax, frame, "temperature", "incorrect_weight", metric)
    else:
        _grid(
            ax,
            fig,
            frame.pivot_table(
                index="temperature", columns="incorrect_weight", values=metric, aggfunc="mean"
            ),
            metric,
        )
        if n_w == 1 and n_t == 1:
            note += "; W and T not swept"
    if ax.get_xlabel() == "":
        ax.set_xlabel(LABELS["incorrect_weight"])
        ax.set_ylabel(LABELS["temperature"])
    ax.set_title(f"{metric} over W and T, mean over the other parameters\n{note}", fontsize=10)
    return _save(fig, path)


def alpha_plot(rows: list[dict[str, Any]], path: Path, metric: str = METRIC) -> Path:
    """Validation accuracy against alpha: trials as points, the mean per alpha as a line."""
    frame = _frame(rows, metric)
    fig, ax = _figure()
    if frame.empty:
        ax.text(0.5, 0.5, f"no trial reported {metric}", ha="center", va="center")
        ax.set_axis_off()
        return _save(fig, path)
    for method, part in frame.groupby("method"):
        mean = part.groupby("alpha")[metric].mean()
        line = ax.plot(mean.index, mean.to_numpy(), marker="o", label=f"{method} (mean)")[0]
        ax.scatter(part["alpha"], part[metric], alpha=0.35, color=line.get_color())
    if frame["alpha"].nunique() == 1:
        ax.set_title(f"alpha not swept (fixed at {frame['alpha'].iloc[0]:g})", fontsize=10)
    else:
        ax.set_title(f"{metric} against alpha, mean over other parameters", fontsize=10)
    ax.set_xlabel("alpha (weight of the teacher term)")
    ax.set_ylabel(metric)
    ax.legend()
    return _save(fig, path)
