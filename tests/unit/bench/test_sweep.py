"""The sweep bench's split of Tune's scheduling on the trial processes' timeline (no Ray):
a job directory written by hand, with known gaps, must give back exactly those gaps."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from raykd.bench.sweep import bench_table, trial_timeline, tune_overhead

T0 = 1_000.0  # the tune stage's start; it ends at T0 + 30


def _job(tmp_path: Path, trials: list[tuple[int, float, float, list[float]]]) -> Path:
    """A job directory: the tune stage [T0, T0 + 30] and one result file per trial
    (pid, start offset, trial_seconds, its epochs' seconds)."""
    events = [{"type": "stage_started", "stage": "tune", "time": T0},
              {"type": "stage_finished", "stage": "tune", "time": T0 + 30.0, "seconds": 30.0}]
    (tmp_path / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    for i, (pid, start, seconds, epochs) in enumerate(trials):
        folder = tmp_path / "tune" / f"trial_x_{i:05d}"
        folder.mkdir(parents=True)
        rows = [{"pid": pid, "trial_started_at": T0 + start, "epoch_seconds": e,
                 "trial_seconds": seconds * (k + 1) / len(epochs)} for k, e in enumerate(epochs)]
        (folder / "result.json").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return tmp_path


def test_the_timeline_splits_each_process_into_start_gaps_and_end(tmp_path: Path) -> None:
    # process 1: starts at 5 s, trials [5, 15] and [16, 26], idle 4 s at the end;
    # process 2: starts at 7 s, one trial [7, 29], idle 1 s at the end
    job = _job(tmp_path, [(1, 5.0, 10.0, [3.0, 3.0]), (2, 7.0, 22.0, [10.0, 10.0]),
                          (1, 16.0, 10.0, [4.0, 4.0])])
    timeline = trial_timeline(job, at_once=2)
    assert timeline == pytest.approx({
        "process_start": (5 + 7) / 2, "between_trials": 1 / 2, "after_last_trial": (4 + 1) / 2,
        "first_trial_outside_epochs": (4 + 2) / 2, "later_trials_outside_epochs": 2 / 2,
    })
    # the slots' idle time and the trials' wall make up the stage, slot by slot
    busy = (10 + 10 + 22) / 2
    assert busy + timeline["process_start"] + timeline["between_trials"] + \
        timeline["after_last_trial"] == pytest.approx(30.0)


def test_a_slot_that_never_ran_a_trial_idles_the_whole_stage(tmp_path: Path) -> None:
    job = _job(tmp_path, [(1, 2.0, 20.0, [9.0, 9.0])])
    assert trial_timeline(job, at_once=2)["process_start"] == pytest.approx((2 + 30) / 2)


def test_no_split_without_starts_or_with_a_process_per_trial(tmp_path: Path) -> None:
    job = _job(tmp_path, [(1, 0.0, 9.0, [4.0]), (2, 0.0, 9.0, [4.0]), (3, 10.0, 9.0, [4.0])])
    assert trial_timeline(job, at_once=2) == {}  # three processes for two slots: no reuse
    assert trial_timeline(tmp_path / "missing", at_once=2) == {}


def test_the_overhead_table_shows_the_split(tmp_path: Path) -> None:
    job = _job(tmp_path, [(1, 5.0, 10.0, [3.0, 3.0]), (2, 7.0, 22.0, [10.0, 10.0]),
                          (1, 16.0, 10.0, [4.0, 4.0])])
    result = {"job_dir": str(job), "resources": {"concurrency": 2},
              "timings": {"tune": 30.0, "teacher_logits": 10.0},
              "trials": [{"train_seconds": 6.0, "trial_seconds": 10.0},
                         {"train_seconds": 20.0, "trial_seconds": 22.0},
                         {"train_seconds": 8.0, "trial_seconds": 10.0}]}
    over = tune_overhead(50.0, result)
    assert over["process_start"] == pytest.approx(6.0)
    assert over["tune_scheduling"] == pytest.approx(30.0 - 42.0 / 2)
    stat = {"median": 1.0, "min": 1.0, "max": 1.0}
    summary = {"trials": 3, "dataset": {"name": "mnist", "train": 100}, "concurrency": 2,
               "rounds": 1, "shared_seconds": stat, "naive_seconds": stat, "ratio": 1.0,
               "teacher_forward_examples": {"shared": 1, "naive": 3}, "cpus": 2,
               "load_1min": {"min": 3.0, "max": 9.5},
               "overhead": {k: {"median": v, "min": v, "max": v} for k, v in over.items()}}
    table = bench_table(summary)
    assert "before each process's first trial" in table and "| 6.0 (6.0-6.0) |" in table
    assert "1-minute load average 3.0-9.5" in table
    assert "| naive (teachers in every trial) | 1.0 (1.0-1.0) | 3 |" in table
    alone = bench_table(summary | {"naive_seconds": None, "ratio": None,
                                   "teacher_forward_examples": {"shared": 1, "naive": None}})
    assert "naive" not in alone and "| 6.0 (6.0-6.0) |" in alone  # --no-naive: overhead only


def test_no_naive_runs_the_shared_sweep_alone_and_writes_the_overhead_files(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``--no-naive``: the shared sweep each round, never the naive one; the summary has no
    naive numbers and the results are named ``sweep_overhead.*`` (``sweep_bench.*``, the
    naive/shared comparison of an earlier run, is left as it was)."""
    import raykd.bench.sweep as bench
    from tests.helpers.specs import sweep_spec

    modes: list[bool] = []
    (tmp_path / "job").mkdir()
    job = _job(tmp_path / "job", [(1, 5.0, 10.0, [3.0, 3.0]), (2, 7.0, 22.0, [10.0, 10.0])])
    result = {"job_dir": str(job), "resources": {"concurrency": 2}, "dataset": {"name": "digits",
              "train": 100}, "timings": {"tune": 30.0, "teacher_logits": 10.0},
              "logit_cache": {"teacher": {"0": {"teacher_forward_examples": 7}}},
              "trials": [{"train_seconds": 6.0, "trial_seconds": 10.0},
                         {"train_seconds": 20.0, "trial_seconds": 22.0}]}

    def timed(spec: object, job_dir: Path, *, naive: bool,
              log: object) -> tuple[float, dict[str, object]]:
        modes.append(naive)
        return 50.0, result

    monkeypatch.setattr(bench, "trained_teachers", lambda spec, out, log: [])
    monkeypatch.setattr(bench, "bench_specs", lambda spec, checkpoints, out: spec)
    monkeypatch.setattr(bench, "_timed", timed)
    results = tmp_path / "results"
    (results / "sweep_bench.md").parent.mkdir()
    (results / "sweep_bench.md").write_text("kept")
    summary = bench.run_sweep_bench(sweep_spec(tmp_path / "store"), out=tmp_path / "out",
                                    rounds=2, results=results, naive=False, log=lambda _: None)
    assert modes == [False, False]  # two rounds, the shared sweep only
    assert summary["naive_seconds"] is None and summary["ratio"] is None
    assert summary["overhead"]["overhead"]["median"] == pytest.approx(50.0 - 10.0 - 26.0 / 2)
    assert (results / "sweep_bench.md").read_text() == "kept"
    assert json.loads((results / "sweep_overhead.json").read_text())["rounds"] == 2
    assert "naive" not in (results / "sweep_overhead.md").read_text()
