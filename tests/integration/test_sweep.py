"""A sweep (raykd.tune) on shared teacher logits, on a real local Ray (digits): it runs once per
module on a 2-CPU local cluster and is then resumed. The pure parts (search space, resource
plan, best row, plots): tests/unit/tune/test_sweep_plan.py.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from typer.testing import CliRunner

from raykd.cli import app
from raykd.core.errors import JobDirError
from raykd.core.jobdir import spec_hash
from raykd.core.results import SweepResult
from raykd.core.spec import parse_spec
from tests.helpers.paths import PACKAGE
from tests.helpers.specs import sweep_spec

PNG = b"\x89PNG\r\n\x1a\n"


































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


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
def test_the_dashboard_shows_the_apis_progress_and_computes_none(swept: dict[str, Any]) -> None:
    """The pages read ``progress`` from GET /api/v1/jobs/{id} (RK.progressOf): none of them
    counts epochs or trials itself any more."""
    static = PACKAGE / "service" / "web" / "static"
    app_js, pages = (static / "app.js").read_text(), [(static / n).read_text() for n in ("jobs.js", "job.js")]
    assert "r.data.progress" in app_js
    for text in pages:
        assert "RK.progressOf(" in text
        assert "total_epochs" not in text and "done.size" not in text


@pytest.mark.slow
def test_teachers_ran_forward_once_and_never_in_a_trial(swept: dict[str, Any]) -> None:
    result = swept["result"]
    sizes = {s: result["dataset"][s] for s in ("train", "val", "test")}
    stats = result["logit_cache"]["teacher"]
    for split, n in sizes.items():  # a cold cache: each of the 3 teachers ran once per split
        assert stats[split]["teacher_forward_examples"] == 3 * n and stats[split]["cache_hits"] == 0
    assert all(t["teacher_forward_examples"] == 0 for t in result["trials"])
    assert not [c for c in swept["actors_after"] if "Teacher" in c], swept["actors_after"]


@pytest.mark.slow
def test_best_is_the_argmax_of_the_reported_metric(swept: dict[str, Any]) -> None:
    result, job_dir = swept["result"], swept["job_dir"]
    table = pd.read_csv(job_dir / "trials.csv")
    assert len(table) == 4 and table["trial_id"].tolist() == [
        t["trial_id"] for t in result["trials"]
    ]
    best = table.loc[table["val_accuracy"].idxmax()]
    assert result["best"]["trial_id"] == best["trial_id"]
    assert result["best"]["val_accuracy"] == pytest.approx(table["val_accuracy"].max())


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
def test_job_dir_of_another_spec_is_refused(swept: dict[str, Any]) -> None:
    from raykd.tune import run_sweep

    other = swept["spec"].model_copy(update={"name": "another"})
    with pytest.raises(JobDirError, match="was started from a different spec"):
        run_sweep(other, job_dir=swept["job_dir"], log=lambda _: None)


@pytest.mark.slow
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
    # the trials' training, spread over the 2 slots, fits in the tune stage; undivided it
    # holds the longest trial's (it cannot be divided by more slots than there are trials)
    longest = max(t["train_seconds"] for t in shared["trials"])
    assert longest <= 2 * over["training"] and over["training"] <= stages["tune"]
    # Tune reused one process per slot: its scheduling and the trials' time outside their
    # epochs split on the processes' timeline, part by part
    parts = over["process_start"] + over["between_trials"] + over["after_last_trial"]
    assert min(over["process_start"], over["between_trials"], over["after_last_trial"]) >= 0
    assert parts == pytest.approx(over["tune_scheduling"], abs=0.1)
    assert over["first_trial_outside_epochs"] + over["later_trials_outside_epochs"] == \
        pytest.approx(over["in_trial_outside_epochs"])
    assert over["teacher_pass"] >= stages["teacher_logits"] > 0 and over["fixed_start"] >= 0
    assert 0 <= over["in_trial_outside_epochs"] and over["overhead"] < wall
    assert over["overhead_share"] == pytest.approx(over["overhead"] / wall)
    table = (tmp_path / "results" / "sweep_bench.md").read_text()
    assert "Tune's overhead" in table and f"{100 * over['overhead_share']:.1f}" in table
