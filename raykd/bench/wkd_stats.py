"""The numbers of ``raykd bench wkd``: paired statistics, the W picked on validation, and
what each method's soft target looks like on the training split.

Pure functions of arrays and run results (no Ray). Accuracies are fractions in [0, 1];
differences are fractions too (the report prints them in percentage points).

- :func:`compare`: per-seed differences ``a - b`` with mean, sample std, wins / ties /
  losses and two paired tests: Student's t on the differences (``scipy.stats.ttest_1samp``,
  equal to ``ttest_rel``) and the exact Wilcoxon signed-rank test (:func:`signed_rank_p`).
  With n seeds and every difference of one sign the two-sided Wilcoxon p is ``2 / 2**n``
  (0.0625 for 5 seeds, 0.031 for 6): its smallest possible value, so it cannot fall below
  0.05 with fewer than 6 seeds.
- :func:`val_picked`: per seed, the run whose validation accuracy is highest among the
  rows given (W chosen on validation from the same teacher pass, reported on test).
- :func:`target_stats`: the training-set accuracy of each method's combined teacher target
  (the arg-max of the logits :mod:`raykd.losses` builds for it) and the mean probability
  it puts on the gold class at the run's temperature.
- :func:`summarize_scenario`: a scenario's runs as per-row statistics and paired
  comparisons, the W picked on validation (:data:`PICKED`) among them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from raykd.losses import combine_teachers, prior_weights, wkd_combine

TIE = 1e-12
"""Differences within this of 0 count as ties (accuracies are multiples of 1/N_test)."""


def paired_p_values(diffs: Sequence[float]) -> tuple[float | None, float | None]:
    """Two-sided p of the paired t test and of the exact Wilcoxon signed-rank test.

    Both test "the mean (t) / median (Wilcoxon) difference is 0". None where undefined:
    fewer than 2 differences; t when the differences are all equal (std 0) but not 0.
    All differences 0: both p = 1. Wilcoxon drops zero differences (``zero_method="wilcox"``).
    """
    from scipy import stats

    d = np.asarray(diffs, dtype=np.float64)
    d = np.where(np.abs(d) <= TIE, 0.0, d)
    if len(d) < 2:
        return None, None
    if not d.any():
        return 1.0, 1.0
    if np.allclose(d, d[0], rtol=0.0, atol=TIE):
        t_p = None  # constant nonzero differences: t is infinite
    else:
        t_p = float(stats.ttest_1samp(d, 0.0).pvalue)
    return t_p, signed_rank_p(d[d != 0.0])


def signed_rank_p(diffs: np.ndarray) -> float:
    """Two-sided exact p of the Wilcoxon signed-rank statistic, by all 2**n sign flips.

    Ranks of ``|d|`` with ties at their mean rank; ``T = sum of the ranks of d > 0``; p is
    the share of the 2**n equally likely sign patterns whose ``|T - E[T]|`` is at least the
    observed one (exact also with tied magnitudes, where scipy's exact table is not). More
    than 20 differences: scipy's normal approximation.
    """
    from scipy import stats

    n = len(diffs)
    if n == 0:
        return 1.0
    if n > 20:
        return float(stats.wilcoxon(diffs, zero_method="wilcox", method="approx").pvalue)
    ranks = stats.rankdata(np.abs(diffs))
    center = ranks.sum() / 2
    observed = abs(ranks[diffs > 0].sum() - center)
    patterns = (np.arange(2**n)[:, None] >> np.arange(n)[None, :]) & 1
    totals = patterns @ ranks
    return float((np.abs(totals - center) >= observed - 1e-9).mean())


def compare(a: Sequence[float], b: Sequence[float]) -> dict[str, Any]:
    """Per-seed differences ``a - b``: mean, sample std, wins/ties/losses, paired tests.

    Returns:
        ``mean``, ``std`` (ddof 1; 0 for one seed), ``wins``, ``ties``, ``losses``,
        ``seeds``, ``t_p``, ``wilcoxon_p`` and ``diffs``.

    Raises:
        ValueError: when ``a`` and ``b`` differ in length or are empty.
    """
    if len(a) != len(b) or not len(a):
        raise ValueError(f"paired comparison needs two equal, non-empty lists; got {len(a)} "
                         f"and {len(b)} values")
    diffs = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    t_p, w_p = paired_p_values(diffs.tolist())
    wins, ties = int((diffs > TIE).sum()), int((np.abs(diffs) <= TIE).sum())
    return {
        "mean": float(diffs.mean()),
        "std": float(diffs.std(ddof=1)) if len(diffs) > 1 else 0.0,
        "wins": wins, "ties": ties, "losses": len(diffs) - wins - ties, "seeds": len(diffs),
        "t_p": t_p, "wilcoxon_p": w_p, "diffs": diffs.tolist(),
    }


def by_seed(runs: Sequence[Mapping[str, Any]], key: str = "test_accuracy") -> list[float]:
    """``key`` of each run, in seed order."""
    return [float(r[key]) for r in sorted(runs, key=lambda r: r["seed"])]


def val_picked(finals: Mapping[str, Sequence[Mapping[str, Any]]],
               rows: Sequence[str]) -> list[dict[str, Any]]:
    """Per seed, the run of ``rows`` with the best validation accuracy (the first of equals).

    Every row must hold the same seeds. Returns one run per seed (in seed order), each a
    copy with ``picked`` = the row it came from.
    """
    seeds = [r["seed"] for r in sorted(finals[rows[0]], key=lambda r: r["seed"])]
    by_row = {row: {r["seed"]: r for r in finals[row]} for row in rows}
    picked = []
    for seed in seeds:
        best = max(rows, key=lambda row: (by_row[row][seed]["val_accuracy"], -rows.index(row)))
        picked.append({**by_row[best][seed], "picked": best})
    return picked


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    arr = np.asarray(values, dtype=np.float64)
    return float(arr.mean()), float(arr.std(ddof=1)) if len(arr) > 1 else 0.0


def target_stats(train_logits: np.ndarray, y: np.ndarray, *, method: str, incorrect_weight: float,
                 teacher_weights: Sequence[float] | None, temperature: float) -> dict[str, float]:
    """How good a method's soft target is on the training split.

    The target is built exactly as :mod:`raykd.losses` builds it for training:
    ``combine_teachers(z, prior_weights(z, q))`` for ``kd`` and
    ``wkd_combine(z, y, W, teacher_weights=q)`` for ``wkd``.

    Returns:
        ``accuracy``: share of training examples whose target's arg-max is the label;
        ``p_gold``: mean of ``softmax(target / T)[y]``.
    """
    import torch

    z = torch.from_numpy(np.ascontiguousarray(train_logits, dtype=np.float32))
    labels = torch.from_numpy(np.asarray(y, dtype=np.int64))
    q = None if teacher_weights is None else torch.tensor(list(teacher_weights),
                                                           dtype=torch.float64)
    if method == "wkd":
        target = wkd_combine(z, labels, incorrect_weight=incorrect_weight, teacher_weights=q)
    elif method == "kd":
        target = combine_teachers(z, prior_weights(z, q))
    else:
        raise ValueError(f"target_stats covers kd and wkd, got method {method!r}")
    probs = torch.softmax(target.double() / temperature, dim=-1)
    return {
        "accuracy": float((target.argmax(-1) == labels).double().mean()),
        "p_gold": float(probs.gather(-1, labels[:, None]).mean()),
    }


def spearman(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Spearman's rank correlation of x and y (None for fewer than 3 points or no spread)."""
    from scipy import stats

    if len(x) < 3 or len(set(x)) < 2 or len(set(y)) < 2:
        return None
    rho = float(stats.spearmanr(x, y).statistic)
    return None if math.isnan(rho) else rho


PICKED = "W picked on val"
"""The pseudo-row: per seed, the W-curve run with the best validation accuracy."""


def summarize_scenario(finals: Mapping[str, Sequence[Mapping[str, Any]]],
                       curve: Sequence[str]) -> dict[str, Any]:
    """Per-row test statistics and every row paired with ``kd`` and with ``none``.

    Args:
        finals: Runs per row (``none`` and ``kd`` among them), each with ``seed``,
            ``val_accuracy`` and ``test_accuracy``; every row holds the same seeds.
        curve: The W-curve rows (``kd`` = W 1 first); :data:`PICKED` chooses among them.

    Returns:
        ``rows`` (``test_mean``, ``test_std``, ``val_mean``, ``seeds`` per row, the pseudo-row
        included, which also lists ``picked``), ``vs_kd`` and ``vs_none``
        (:func:`~raykd.bench.wkd_stats.compare` per row), ``best_val`` (the curve row of
        highest mean validation accuracy) and ``best_test`` (highest mean test accuracy:
        an oracle, for reference).
    """
    picked = val_picked(finals, list(curve))
    tests = {row: by_seed(runs) for row, runs in finals.items()}
    tests[PICKED] = [r["test_accuracy"] for r in picked]
    vals = {row: by_seed(runs, "val_accuracy") for row, runs in finals.items()}
    vals[PICKED] = [r["val_accuracy"] for r in picked]
    rows: dict[str, Any] = {}
    for row, values in tests.items():
        mean, std = mean_std(values)
        rows[row] = {"test_mean": mean, "test_std": std, "val_mean": mean_std(vals[row])[0],
                     "seeds": len(values)}
    rows[PICKED]["picked"] = [r["picked"] for r in picked]
    others = [row for row in tests if row != "none"]
    return {
        "rows": rows,
        "vs_kd": {row: compare(tests[row], tests["kd"]) for row in others if row != "kd"},
        "vs_none": {row: compare(tests[row], tests["none"]) for row in others},
        "best_val": max(curve, key=lambda r: rows[r]["val_mean"]),
        "best_test": max(curve, key=lambda r: rows[r]["test_mean"]),
    }
