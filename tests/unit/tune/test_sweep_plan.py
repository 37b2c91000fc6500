"""The sweep's pure parts (raykd.tune, no Ray): the search space, the methods' temperatures,
ASHA's grace, the resource plan, the best row, the plots, and bad sweep specs through the CLI
(exit code 2 and one line). The sweep itself on a real local Ray: tests/integration/test_sweep.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from raykd.cli import app
from raykd.core.spec import JobSpec, SpecError, parse_spec
from raykd.tune.plots import alpha_plot, heatmap_w_t
from raykd.tune.results import best_row, trial_row
from raykd.tune.space import (
    OPTUNA_MISSING,
    ResourceError,
    check_sweep,
    num_trials,
    param_space,
    plan_resources,
    scheduler,
)
from tests.helpers.specs import GRID, digits_spec, sweep_spec

PNG = b"\x89PNG\r\n\x1a\n"


def test_param_space_grid_fixes_what_is_not_swept(tmp_path: Path) -> None:
    spec = sweep_spec(tmp_path)
    assert spec.sweep is not None
    space = param_space(spec.sweep, spec.methods[0])
    assert space["incorrect_weight"] == {"grid_search": [0.5, 1.0]}
    assert space["temperature"] == {"grid_search": [2.0, 4.0]}
    assert space["method"] == "wkd" and space["alpha"] == 0.9
    assert num_trials(spec.sweep) == 4


def test_param_space_random_draws_ranges_and_choices(tmp_path: Path) -> None:
    from ray.tune.search.sample import Categorical, Float

    spec = sweep_spec(
        tmp_path,
        searcher="random",
        num_samples=5,
        method=["kd", "wkd"],
        alpha={"low": 0.1, "high": 0.9},
        temperature={"low": 1.0, "high": 8.0, "log": True},
    )
    assert spec.sweep is not None
    space = param_space(spec.sweep, spec.methods[0])
    assert isinstance(space["method"], Categorical) and isinstance(space["alpha"], Float)
    assert 1.0 <= space["temperature"].sample() <= 8.0
    assert num_trials(spec.sweep) == 5


def _trial_methods(spec: JobSpec) -> list[Any]:
    """Every grid trial's resolved method, as a trial of the sweep would run it."""
    from ray.tune.search.variant_generator import generate_variants

    from raykd.tune.space import trial_method

    assert spec.sweep is not None
    space = param_space(spec.sweep, spec.methods[0])
    return [trial_method(spec.methods[0], config) for _, config in generate_variants(space)]


@pytest.mark.parametrize(
    ("base", "expected"),
    [
        ({"method": "kd"}, {"kd": 4.0, "annealing": 1.0}),
        ({"method": "annealing"}, {"kd": 4.0, "annealing": 1.0}),
        ({"method": "kd", "temperature": 2.5}, {"kd": 2.5, "annealing": 2.5}),
    ],
)
def test_a_method_sweep_gives_each_method_its_own_default_temperature(
    tmp_path: Path, base: dict[str, Any], expected: dict[str, float]
) -> None:
    data = digits_spec(
        str(tmp_path), methods=[base], sweep={"searcher": "grid", "method": ["kd", "annealing"]}
    )
    spec = parse_spec(data)
    methods = _trial_methods(spec)
    assert {m.method: m.temperature for m in methods} == expected
    config = {"method": "annealing", "incorrect_weight": 0.75, "alpha": 0.9}
    if "temperature" in param_space(spec.sweep, spec.methods[0]):  # type: ignore[arg-type]
        config["temperature"] = 2.5
    row = trial_row(config, {}, [], trial_id="t", epochs=1, error=None)
    assert row["temperature"] == expected["annealing"]  # the table shows the T the trial ran


def test_a_swept_temperature_wins_over_the_methods_defaults(tmp_path: Path) -> None:
    data = digits_spec(
        str(tmp_path),
        methods=[{"method": "kd"}],
        sweep={
            "searcher": "grid",
            "method": ["kd", "annealing"],
            "temperature": {"values": [3.0, 6.0]},
        },
    )
    pairs = {(m.method, m.temperature) for m in _trial_methods(parse_spec(data))}
    assert pairs == {("kd", 3.0), ("kd", 6.0), ("annealing", 3.0), ("annealing", 6.0)}


def test_asha_never_stops_a_trial_at_its_last_epoch(tmp_path: Path) -> None:
    spec = sweep_spec(tmp_path, **GRID, scheduler="asha")
    assert spec.sweep is not None
    asha = scheduler(spec.sweep, epochs=4)
    assert asha._max_t == 4 and asha._stop_last_trials is False
    assert scheduler(sweep_spec(tmp_path).sweep, epochs=4) is None  # type: ignore[arg-type]


def test_plan_fits_the_cluster(tmp_path: Path) -> None:
    one = sweep_spec(tmp_path)
    plan = plan_resources(one, cluster_cpus=2, cluster_gpus=0, use_gpu=False)
    assert (plan.trial_cpus, plan.concurrency, plan.nested) == (1.0, 2, False)
    capped = one.model_copy(
        update={"sweep": one.sweep.model_copy(update={"max_concurrent_trials": 1})}
    )
    assert plan_resources(capped, cluster_cpus=2, cluster_gpus=0, use_gpu=False).concurrency == 1
    two = parse_spec(
        {**json.loads(one.model_dump_json()), "scaling": {"num_workers": 2, "cpus_per_worker": 0.5}}
    )
    nested = plan_resources(two, cluster_cpus=2, cluster_gpus=0, use_gpu=False)
    assert (
        nested.nested and nested.cpus_per_trial == pytest.approx(1.01) and nested.concurrency == 1
    )
    too_big = parse_spec({**json.loads(one.model_dump_json()), "scaling": {"num_workers": 2}})
    with pytest.raises(ResourceError, match=r"needs 2.01 CPUs, the cluster has 2.*cpus_per_worker"):
        plan_resources(too_big, cluster_cpus=2, cluster_gpus=0, use_gpu=False)


def _row(i: int, acc: float, w: float = 0.5, t: float = 2.0, alpha: float = 0.9) -> dict[str, Any]:
    config = {"method": "wkd", "incorrect_weight": w, "temperature": t, "alpha": alpha}
    metrics = {"val_accuracy": acc, "training_iteration": 2, "trial_seconds": 1.0}
    return trial_row(config, metrics, [metrics], trial_id=f"t{i}", epochs=2, error=None)


def test_best_row_is_the_argmax_and_skips_missing_metrics() -> None:
    rows = [_row(0, 0.5), _row(1, 0.9), _row(2, float("nan")), _row(3, 0.9)]
    assert best_row(rows)["trial_id"] == "t1"
    with pytest.raises(ValueError, match="no trial reported val_accuracy"):
        best_row([_row(0, float("nan"))])


def test_a_span_sweeps_rows_rank_by_squad_f1_not_window_accuracy() -> None:
    """Window accuracy and SQuAD F1 disagree here: the span sweep's best is the F1 one."""
    history = [{"val_accuracy": 0.9, "val_f1": 30.0}, {"val_accuracy": 0.95, "val_f1": 20.0}]
    keen = trial_row(
        {"method": "wkd"},
        {"val_accuracy": 0.95, "val_f1": 20.0, "val_exact": 18.0, "training_iteration": 2},
        history,
        trial_id="a",
        epochs=2,
        error=None,
        metric="val_f1",
    )
    apt = trial_row(
        {"method": "wkd"},
        {"val_accuracy": 0.6, "val_f1": 25.0, "val_exact": 25.0, "training_iteration": 2},
        [],
        trial_id="b",
        epochs=2,
        error=None,
        metric="val_f1",
    )
    assert keen["best_val_f1"] == 30.0 and keen["val_exact"] == 18.0
    assert best_row([keen, apt], "val_f1")["trial_id"] == "b"
    assert best_row([keen, apt])["trial_id"] == "a"  # a classification sweep's rule
    assert "val_f1" not in trial_row({}, {}, [], trial_id="c", epochs=1, error=None)


def test_an_interrupted_sweep_stops_before_the_table(tmp_path: Path) -> None:
    from raykd.engine.context import Job
    from raykd.tune.driver import stop_if_interrupted

    spec = sweep_spec(tmp_path)
    job = Job(spec=spec, job_dir=tmp_path, log=lambda _: None)
    left = _row(1, float("nan"))
    left["status"] = "unfinished"
    with pytest.raises(KeyboardInterrupt):
        stop_if_interrupted(job, [_row(0, 0.5), left], tune_seconds=10.0)
    stop_if_interrupted(job, [_row(0, 0.5), _row(1, 0.6)], tune_seconds=10.0)
    budget = spec.model_copy(update={"sweep": spec.sweep.model_copy(update={"time_budget_s": 5.0})})
    job = Job(spec=budget, job_dir=tmp_path, log=lambda _: None)
    stop_if_interrupted(job, [_row(0, 0.5), left], tune_seconds=10.0)  # the budget ran out


@pytest.mark.parametrize(
    "grid",
    [
        [(0.5, 2.0), (1.0, 2.0), (0.5, 4.0), (1.0, 4.0)],  # both vary: heatmap
        [(0.5, 2.0), (0.75, 2.0), (1.0, 2.0)],  # only W: line
        [(0.5, 2.0), (0.5, 4.0)],  # only T: line
        [(0.5, 2.0)],  # neither: one cell
    ],
)
def test_plots_render_every_shape_of_sweep(tmp_path: Path, grid: list[tuple[float, float]]) -> None:
    rows = [
        _row(i, 0.8 + 0.01 * i, w, t, alpha=0.5 + 0.1 * (i % 2)) for i, (w, t) in enumerate(grid)
    ]
    for path in (heatmap_w_t(rows, tmp_path / "h.png"), alpha_plot(rows, tmp_path / "a.png")):
        assert path.read_bytes()[:8] == PNG and path.stat().st_size > 5000


@pytest.mark.skipif(
    __import__("importlib").util.find_spec("optuna") is not None, reason="optuna installed"
)
def test_optuna_missing_is_a_clear_spec_error(tmp_path: Path) -> None:
    with pytest.raises(
        SpecError,
        match=r"^searcher 'optuna' needs the optuna package: pip install 'raykd\[optuna\]'$",
    ):
        check_sweep(sweep_spec(tmp_path, **{**GRID, "searcher": "optuna"}))
    assert OPTUNA_MISSING.startswith("searcher 'optuna'")


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("sweep.temperature.values=[]", "sweep.temperature: values is empty"),
        (
            "sweep.incorrect_weight.values=[0.5,1.5]",
            "incorrect_weight spans [0.5, 1.5], outside incorrect_weight's range (0, 1]",
        ),
        (
            "sweep.alpha={low: -0.5, high: 0.5}",
            "alpha spans [-0.5, 0.5], outside alpha's range [0, 1]",
        ),
        ("sweep.searcher=bayes", "sweep.searcher: Input should be 'grid', 'random' or 'optuna'"),
    ],
)
def test_bad_sweep_spec_is_rejected_by_validate(override: str, message: str) -> None:
    result = CliRunner().invoke(app, ["validate", "digits-sweep", "--set", override])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]


@pytest.mark.skipif(
    __import__("importlib").util.find_spec("optuna") is not None, reason="optuna installed"
)
def test_sweep_command_without_optuna_exits_2() -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "raykd.cli",
            "sweep",
            "digits-sweep",
            "--set",
            "sweep.searcher=optuna",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "RAY_ADDRESS": ""},
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == f"error: {OPTUNA_MISSING}"
