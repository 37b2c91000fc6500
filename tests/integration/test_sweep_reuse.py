"""A reused trial process keeps nothing of the trial it ran before (Tune's ``reuse_actors``).

Two sweeps of the same four trials (T x alpha) run one trial at a time, so every trial after
the first runs in the process of the one before; the second sweep runs them in the reverse
order. Each trial must report the same losses and accuracies in both: the first trial of one
sweep ran in a fresh process, the last of the other in a process that had trained three other
configurations before it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from raykd.core.spec import parse_spec
from tests.helpers.specs import digits_spec

pytestmark = [pytest.mark.ray, pytest.mark.slow]

TEMPERATURES, ALPHAS = [2.0, 4.0], [0.5, 0.9]


def _spec(storage: Path, temperatures: list[float], alphas: list[float]) -> Any:
    return parse_spec(digits_spec(
        str(storage),
        teacher_train={"epochs": 3, "batch_size": 64, "lr": 0.003},
        train={"epochs": 2, "batch_size": 64, "lr": 0.003},
        methods=[{"method": "wkd", "temperature": 4.0, "alpha": 0.9, "incorrect_weight": 0.75}],
        cache={"dir": str(storage / "cache")},
        sweep={"searcher": "grid", "temperature": {"values": temperatures},
               "alpha": {"values": alphas}, "max_concurrent_trials": 1,
               "final_retrain": False},
    ))


def _reports(job_dir: Path) -> list[dict[str, Any]]:
    """Every trial's reports, in the order the trials ran (Tune numbers them as it creates
    them, and runs them in that order one at a time): its config, process ids and per-epoch
    training loss and validation accuracy (from Tune's result files)."""
    trials = []
    for path in sorted((job_dir / "tune").glob("trial_*/result.json")):
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        config = rows[0]["config"]
        trials.append({
            "key": (config["temperature"], config["alpha"]),
            "pids": {r["pid"] for r in rows},
            "epochs": [v for r in rows for v in (r["train_loss"], r["val_accuracy"])],
        })
    return trials


def test_a_reused_trial_process_gives_each_trial_its_own_losses(
        ray_local: None, tmp_path: Path) -> None:
    from raykd.tune import run_sweep

    forward = _spec(tmp_path, TEMPERATURES, ALPHAS)
    backward = _spec(tmp_path, TEMPERATURES[::-1], ALPHAS[::-1])
    runs = []
    for name, spec in (("forward", forward), ("backward", backward)):
        result = run_sweep(spec, job_dir=tmp_path / name, log=lambda _: None)
        assert [t["status"] for t in result["trials"]] == ["done"] * 4
        runs.append(_reports(tmp_path / name))
    for trials in runs:  # one process ran the four trials, one after another
        assert len({pid for t in trials for pid in t["pids"]}) == 1, trials
    first, second = ({t["key"]: t["epochs"] for t in trials} for trials in runs)
    assert [t["key"] for t in runs[0]] == [t["key"] for t in runs[1]][::-1]
    assert len(set(map(str, first.values()))) == 4  # the configurations train differently
    for key, epochs in first.items():
        assert second[key] == pytest.approx(epochs, rel=1e-6), key
