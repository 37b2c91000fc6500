"""Tests for raykd.tune: sweeps on shared teacher logits, on a real local Ray (digits).

The pure parts (search space, resource plan, best row, plots) run without Ray; the
sweep itself runs once per module on a 2-CPU local cluster and is then resumed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from typer.testing import CliRunner

from raykd.cli import app
from raykd.core.errors import JobDirError
from raykd.core.jobdir import spec_hash
from raykd.core.results import SweepResult
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
from tests.conftest import digits_spec

GRID = {
    "searcher": "grid",
    "incorrect_weight": {"values": [0.5, 1.0]},
    "temperature": {"values": [2.0, 4.0]},
}
PNG = b"\x89PNG\r\n\x1a\n"


def sweep_spec(storage: str | Path, **sweep: Any) -> JobSpec:
    """The conftest digits spec, 2 epochs, base wkd, with a sweep section."""
    data = digits_spec(
        str(storage),
        teacher_train={"epochs": 3, "batch_size": 64, "lr": 0.003},
        train={"epochs": 2, "batch_size": 64, "lr": 0.003},
        methods=[{"method": "wkd", "temperature": 4.0, "alpha": 0.9}],
        cache={"dir": str(Path(storage) / "cache")},
        sweep=sweep or GRID,
    )
    return parse_spec(data)


# --- pure parts: no Ray ------------------------------------------------------------------


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


@pytest.mark.parametrize(("base", "expected"), [
    ({"method": "kd"}, {"kd": 4.0, "annealing": 1.0}),
    ({"method": "annealing"}, {"kd": 4.0, "annealing": 1.0}),
    ({"method": "kd", "temperature": 2.5}, {"kd": 2.5, "annealing": 2.5}),
])
def test_a_method_sweep_gives_each_method_its_own_default_temperature(
        tmp_path: Path, base: dict[str, Any], expected: dict[str, float]) -> None:
    data = digits_spec(str(tmp_path), methods=[base],
                       sweep={"searcher": "grid", "method": ["kd", "annealing"]})
    spec = parse_spec(data)
    methods = _trial_methods(spec)
    assert {m.method: m.temperature for m in methods} == expected
    config = {"method": "annealing", "incorrect_weight": 0.75, "alpha": 0.9}
    if "temperature" in param_space(spec.sweep, spec.methods[0]):  # type: ignore[arg-type]
        config["temperature"] = 2.5
    row = trial_row(config, {}, [], trial_id="t", epochs=1, error=None)
    assert row["temperature"] == expected["annealing"]  # the table shows the T the trial ran


def test_a_swept_temperature_wins_over_the_methods_defaults(tmp_path: Path) -> None:
    data = digits_spec(str(tmp_path), methods=[{"method": "kd"}],
                       sweep={"searcher": "grid", "method": ["kd", "annealing"],
                              "temperature": {"values": [3.0, 6.0]}})
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
    keen = trial_row({"method": "wkd"}, {"val_accuracy": 0.95, "val_f1": 20.0, "val_exact": 18.0,
                                         "training_iteration": 2}, history,
                     trial_id="a", epochs=2, error=None, metric="val_f1")
    apt = trial_row({"method": "wkd"}, {"val_accuracy": 0.6, "val_f1": 25.0, "val_exact": 25.0,
                                        "training_iteration": 2}, [],
                    trial_id="b", epochs=2, error=None, metric="val_f1")
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


# --- bad sweep specs through the CLI: exit code 2 and one line ---------------------------


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


# --- a real sweep on local Ray ---------------------------------------------------------------


def _alive_actor_classes() -> list[str]:
    import ray
    from ray.util.state import list_actors

    address = ray.get_runtime_context().gcs_address
    return [a.class_name for a in list_actors(address=address, filters=[("state", "=", "ALIVE")])]


def _trial_files(job_dir: Path) -> dict[str, str]:
    """Every file under the trials' directories with a hash of its content.

    Tune copies the trials' files back to storage when it restores an experiment (new
    modification times), so the check is on content: a rerun trial would append rows.
    """
    import hashlib

    root = job_dir / "tune"
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in root.glob("trial_*/**/*")
        if p.is_file()
    }


@pytest.fixture(scope="module")
def swept(ray_local: None, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One 4-trial grid sweep (W x T), run once for the module."""
    from raykd.tune import run_sweep

    root = tmp_path_factory.mktemp("sweep")
    spec = sweep_spec(root)
    lines: list[str] = []
    result = run_sweep(spec, job_dir=root / "job", log=lines.append)
    return {
        "spec": spec,
        "job_dir": root / "job",
        "result": result,
        "log": lines,
        "actors_after": _alive_actor_classes(),
        "files": _trial_files(root / "job"),
    }


def test_every_trial_ran(swept: dict[str, Any]) -> None:
    trials = swept["result"]["trials"]
    assert len(trials) == 4 and swept["result"]["resumed"] is False
    assert {(t["incorrect_weight"], t["temperature"]) for t in trials} == {
        (0.5, 2.0),
        (0.5, 4.0),
        (1.0, 2.0),
        (1.0, 4.0),
    }
    for t in trials:
        assert t["status"] == "done" and t["epochs"] == 2 and t["method"] == "wkd"
        assert 0.0 <= t["val_accuracy"] <= 1.0 and t["trial_seconds"] > 0
        assert 0 < t["train_seconds"] < t["trial_seconds"]  # epochs' steps, inside the trial


def test_every_trial_iteration_is_an_event(swept: dict[str, Any]) -> None:
    """The Tune callback (driver side) appends one ``trial`` event per reported iteration,
    and one ``done`` event per trial, to the sweep's events.jsonl."""
    from raykd.core.events import JobStarted, Trial, read_events

    events = read_events(swept["job_dir"] / "events.jsonl")
    starts = [i for i, e in enumerate(events) if isinstance(e, JobStarted)]
    first = events[: starts[1] if len(starts) > 1 else None]  # the sweep's first run only
    for t in swept["result"]["trials"]:
        mine = [e for e in first if isinstance(e, Trial) and e.trial_id == t["trial_id"]]
        reports = [e for e in mine if not e.done]
        assert [e.metrics["training_iteration"] for e in reports] == [1.0, 2.0], t["trial_id"]
        assert reports[-1].metrics["val_accuracy"] == pytest.approx(t["val_accuracy"])
        assert reports[0].config["incorrect_weight"] == t["incorrect_weight"]
        assert sum(e.done for e in mine) == 1, t["trial_id"]


def test_the_apis_progress_rises_with_the_trials(swept: dict[str, Any]) -> None:
    """A running sweep's progress (``job_status``: what the service stores as the API's
    ``progress`` and the dashboard shows) counts its trials' reported epochs: it rose with
    every new trial report, and was 100% once every trial had reported every epoch."""
    from raykd.core.events import JobFinished, JobStarted, Trial, read_events
    from raykd.core.status import job_status

    events = read_events(swept["job_dir"] / "events.jsonl")
    starts = [i for i, e in enumerate(events) if isinstance(e, JobStarted)]
    first = events[: starts[1] if len(starts) > 1 else None]
    end = next(i for i, e in enumerate(first) if isinstance(e, JobFinished))
    total = 4 * 2  # trials x epochs
    seen: set[tuple[str, float]] = set()
    for i, e in enumerate(first[:end]):
        progress = job_status(first[: i + 1], process_alive=True).progress
        if isinstance(e, Trial) and not e.done:
            seen.add((e.trial_id, e.metrics["training_iteration"]))
        assert progress == pytest.approx(len(seen) / total), (i, e)
        assert job_status(first[: i + 1], process_alive=True).state == "running"
    assert 0 < job_status(first[: next(i for i, e in enumerate(first) if isinstance(e, Trial)) + 1]).progress < 1
    assert job_status(first[:end]).progress == 1.0


def test_the_dashboard_shows_the_apis_progress_and_computes_none(swept: dict[str, Any]) -> None:
    """The pages read ``progress`` from GET /api/v1/jobs/{id} (RK.progressOf): none of them
    counts epochs or trials itself any more."""
    static = Path(__file__).parents[1] / "raykd" / "service" / "web" / "static"
    app_js, pages = (static / "app.js").read_text(), [(static / n).read_text() for n in ("jobs.js", "job.js")]
    assert "r.data.progress" in app_js
    for text in pages:
        assert "RK.progressOf(" in text
        assert "total_epochs" not in text and "done.size" not in text


def test_teachers_ran_forward_once_and_never_in_a_trial(swept: dict[str, Any]) -> None:
    result = swept["result"]
    sizes = {s: result["dataset"][s] for s in ("train", "val", "test")}
    stats = result["logit_cache"]["teacher"]
    for split, n in sizes.items():  # a cold cache: each of the 3 teachers ran once per split
        assert stats[split]["teacher_forward_examples"] == 3 * n and stats[split]["cache_hits"] == 0
    assert all(t["teacher_forward_examples"] == 0 for t in result["trials"])
    assert not [c for c in swept["actors_after"] if "Teacher" in c], swept["actors_after"]


def test_best_is_the_argmax_of_the_reported_metric(swept: dict[str, Any]) -> None:
    result, job_dir = swept["result"], swept["job_dir"]
    table = pd.read_csv(job_dir / "trials.csv")
    assert len(table) == 4 and table["trial_id"].tolist() == [
        t["trial_id"] for t in result["trials"]
    ]
    best = table.loc[table["val_accuracy"].idxmax()]
    assert result["best"]["trial_id"] == best["trial_id"]
    assert result["best"]["val_accuracy"] == pytest.approx(table["val_accuracy"].max())


def test_outputs_and_final_student(swept: dict[str, Any]) -> None:
    from raykd.models import load_checkpoint

    result, job_dir = swept["result"], swept["job_dir"]
    for name in ("heatmap_w_t.png", "alpha.png"):
        assert (job_dir / name).read_bytes()[:8] == PNG and (job_dir / name).stat().st_size > 5000
    saved = json.loads((job_dir / "sweep.json").read_text())
    assert saved["best"] == json.loads(json.dumps(result["best"]))
    assert saved == result  # run_sweep returns the file as written
    typed = SweepResult.load(job_dir)  # the schema the file was written through
    stored_spec = json.loads((job_dir / "spec.json").read_text())
    assert typed.job_id == "job" and typed.spec_hash == spec_hash(stored_spec)
    assert typed.final is not None
    assert typed.final.checkpoint == str(job_dir / "best_student.safetensors")
    assert typed.ensemble is not None and len(typed.teachers) == 3
    final = result["final"]
    assert final["trained_on"] == {
        "train": result["dataset"]["train"],
        "val": result["dataset"]["val"],
    }
    assert final["method"]["incorrect_weight"] == result["best"]["incorrect_weight"]
    assert 0.5 < final["test_accuracy"] <= 1.0
    assert load_checkpoint(job_dir / "best_student.safetensors") is not None


def test_resumed_sweep_reruns_no_trial(swept: dict[str, Any]) -> None:
    from raykd.tune import run_sweep

    job_dir = swept["job_dir"]
    checkpoint_mtime = (job_dir / "best_student.safetensors").stat().st_mtime
    again = run_sweep(swept["spec"], job_dir=job_dir, log=lambda _: None)
    assert again["resumed"] is True
    before = {t["trial_id"]: t["trial_seconds"] for t in swept["result"]["trials"]}
    assert {t["trial_id"]: t["trial_seconds"] for t in again["trials"]} == before
    assert _trial_files(job_dir) == swept["files"]  # no new trial directory, no new result
    assert (job_dir / "best_student.safetensors").stat().st_mtime == checkpoint_mtime
    assert all(
        s["teacher_forward_examples"] == 0 and s["cache_hits"] == 3
        for s in again["logit_cache"]["teacher"].values()
    )


def test_job_dir_of_another_spec_is_refused(swept: dict[str, Any]) -> None:
    from raykd.tune import run_sweep

    other = swept["spec"].model_copy(update={"name": "another"})
    with pytest.raises(JobDirError, match="was started from a different spec"):
        run_sweep(other, job_dir=swept["job_dir"], log=lambda _: None)


def test_naive_random_search_with_asha(swept: dict[str, Any], tmp_path: Path) -> None:
    """The benchmark's baseline (every trial computes the train logits again), on random
    search with ASHA: no teacher stage runs in the driver, so this sweep is cheap."""
    from raykd.tune import run_sweep

    base = json.loads(swept["spec"].model_dump_json())
    for t, saved in zip(base["teachers"], swept["result"]["teachers"], strict=True):
        t["checkpoint"] = saved["checkpoint"]
    base["sweep"] = {
        "searcher": "random",
        "scheduler": "asha",
        "num_samples": 3,
        "method": ["kd", "wkd"],
        "alpha": {"low": 0.2, "high": 0.9},
        "final_retrain": False,
    }
    result = run_sweep(parse_spec(base), job_dir=tmp_path / "naive", log=lambda _: None, naive=True)
    assert result["mode"] == "naive" and result["final"] is None
    assert result["logit_cache"] == {} and result["teachers"] == [] and result["ensemble"] is None
    assert SweepResult.load(tmp_path / "naive").mode == "naive"
    trials, n_train = result["trials"], swept["result"]["dataset"]["train"]
    assert [t["teacher_forward_examples"] for t in trials] == [3 * n_train] * 3
    assert all(0.2 <= t["alpha"] <= 0.9 and t["method"] in ("kd", "wkd") for t in trials)
    assert all(1 <= t["epochs"] <= 2 and not t["status"].startswith("error") for t in trials)
    assert max(t["epochs"] for t in trials) == 2 and result["best"]["val_accuracy"] > 0


@pytest.mark.slow
def test_the_sweep_bench_splits_the_wall_into_teachers_training_and_tunes_overhead(
        swept: dict[str, Any], tmp_path: Path) -> None:
    """``raykd bench sweep --rounds 1``: each mode runs on a cold logit cache (the shared run
    computes its teacher pass, the naive one a pass per trial), and the overhead is the wall
    less one teacher pass less the trials' own training divided by the trials run at once."""
    out = tmp_path / "bench"
    spec = tmp_path / "spec.json"
    spec.write_text(swept["spec"].model_dump_json())
    cli = CliRunner().invoke(app, ["bench", "sweep", str(spec), "--out", str(out),
                                   "--rounds", "1", "--results", str(tmp_path / "results")])
    assert cli.exit_code == 0, cli.output
    summary = json.loads((out / "bench.json").read_text())
    n_train, trials = swept["result"]["dataset"]["train"], 4
    fwd = summary["teacher_forward_examples"]
    assert fwd["shared"] == 3 * sum(summary["dataset"][s] for s in ("train", "val", "test"))
    assert fwd["naive"] == trials * 3 * n_train
    shared = json.loads((out / "shared" / "sweep.json").read_text())
    wall, stages = summary["runs"]["shared"][0], shared["timings"]
    over = summary["overhead_runs"][0]
    # the trials' training, spread over the slots, fits in the tune stage and is at least the
    # longest trial's (it cannot be divided by more slots than there are trials)
    longest = max(t["train_seconds"] for t in shared["trials"])
    assert longest <= over["training"] <= stages["tune"]
    assert over["teacher_pass"] >= stages["teacher_logits"] > 0 and over["fixed_start"] >= 0
    assert 0 <= over["in_trial_outside_epochs"] and over["overhead"] < wall
    assert over["overhead_share"] == pytest.approx(over["overhead"] / wall)
    table = (tmp_path / "results" / "sweep_bench.md").read_text()
    assert "Tune's overhead" in table and f"{100 * over['overhead_share']:.1f}" in table
