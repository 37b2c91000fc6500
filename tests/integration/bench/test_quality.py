"""``raykd bench quality --quick`` on a real local Ray, and the report's pure functions."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from raykd.bench.quality_report import gap_closed, paired, render, summarize, verdict
from raykd.bench.quality_runs import ROWS, Grid

ROW_NAMES = [r.name for r in ROWS]


# --- pure functions (no Ray) --------------------------------------------------------


def test_paired_counts_wins_ties_and_std() -> None:
    p = paired([0.9, 0.8, 0.7], [0.85, 0.8, 0.75])
    assert p["wins"] == 1 and p["ties"] == 1 and p["seeds"] == 3
    assert p["mean"] == pytest.approx(0.0)
    assert p["std"] == pytest.approx(np.std([0.05, 0.0, -0.05], ddof=1))
    assert paired([0.9, 0.92], 0.91)["diffs"] == pytest.approx([-0.01, 0.01])


def test_gap_closed() -> None:
    assert gap_closed(0.95, 0.9, 1.0) == pytest.approx(0.5)
    assert gap_closed(1.02, 0.9, 1.0) == pytest.approx(1.2)  # beyond the ensemble
    assert gap_closed(0.95, 0.96, 0.96) is None  # nothing to close


def _finals(accs: dict[str, list[float]]) -> dict[str, list[dict[str, Any]]]:
    return {
        row: [{"seed": i, "test_accuracy": a, "val_accuracy": a} for i, a in enumerate(values)]
        for row, values in accs.items()
    }


def test_verdict_says_yes_only_when_the_numbers_do() -> None:
    above = summarize(
        _finals({"none": [0.8] * 3, "kd": [0.85] * 3, "wkd W=0.75": [0.91, 0.92, 0.93]}), 0.9
    )
    text = verdict("toy", above, 0.9)
    assert "Did it exceed its ensemble? Yes, in every seed: +2.00 points" in text
    below = summarize(
        _finals({"none": [0.8] * 3, "kd": [0.85] * 3, "wkd W=0.75": [0.86, 0.91, 0.85]}), 0.9
    )
    text = verdict("toy", below, 0.9)
    assert "Did it exceed its ensemble? No (above it in 1 of 3 seeds)" in text
    assert "Against plain KD: +2.33 points" in text and "ahead in 2 of 3 seeds" in text


def test_grid_gives_every_tuned_row_the_same_budget() -> None:
    grid = Grid()
    sizes = {r.name: len(grid.points(r)) for r in ROWS}
    assert sizes.pop("none") == 0 and set(sizes.values()) == {4}


def test_bad_seeds_is_a_user_error(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from raykd.cli import app

    got = CliRunner().invoke(
        app, ["bench", "quality", "--quick", "--seeds", "0", "--out", str(tmp_path)]
    )
    assert got.exit_code == 2 and "--seeds=0" in got.output


# --- the quick benchmark, for real --------------------------------------------------


@pytest.fixture(scope="module")
def quick(ray_local: None, tmp_path_factory: pytest.TempPathFactory
          ) -> tuple[Path, dict[str, Any]]:
    from raykd.bench.quality import run_quality_bench

    out = tmp_path_factory.mktemp("bench-quality")
    return out, run_quality_bench(out=out, quick=True, log=lambda line: None)


def _scenarios(result: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(name, sc) for name, sc in result["datasets"]["digits"]["scenarios"].items()]


@pytest.mark.ray
@pytest.mark.slow
def test_quick_table_has_every_row(quick: tuple[Path, dict[str, Any]]) -> None:
    out, result = quick
    assert json.loads((out / "quality.json").read_text())["datasets"].keys() == {"digits"}
    md = (out / "quality.md").read_text()
    assert [name for name, _ in _scenarios(result)] == ["same-size", "large-to-small"]
    for _, sc in _scenarios(result):
        assert list(sc["finals"]) == ROW_NAMES and list(sc["summary"]["rows"]) == ROW_NAMES
        for row, runs in sc["finals"].items():
            assert [r["seed"] for r in runs] == [0, 1]
            for r in runs:
                assert 0.0 <= r["test_accuracy"] <= 1.0 and 0.0 <= r["val_accuracy"] <= 1.0
                assert 1 <= r["best_epoch"] <= 8
            assert f"| {row} | " in md
        assert sc["sentence"] in md and "ensemble" in sc["sentence"]
        assert set(sc["picked"]) == set(ROW_NAMES) - {"none"}
    assert (out / "quality_digits.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    render(out)  # the tables come from quality.json alone
    assert (out / "quality.md").read_text() == md


@pytest.mark.ray
@pytest.mark.slow
def test_ensemble_accuracy_matches_saved_teacher_logits(quick: tuple[Path, dict[str, Any]]) -> None:
    from raykd.data import load_dataset

    out, result = quick
    teachers = result["datasets"]["digits"]["teachers"]
    data = load_dataset("digits", val_fraction=0.1, test_fraction=0.2, seed=0)
    logits = np.load(out / "teachers" / "digits" / "test_logits.npy", allow_pickle=False)
    assert logits.shape == (3, len(data.test), 10)
    ensemble = float((logits.mean(0).argmax(-1) == data.test.y).mean())
    assert teachers["ensemble"]["test_accuracy"] == pytest.approx(ensemble, abs=1e-12)
    each = [float((z.argmax(-1) == data.test.y).mean()) for z in logits]
    assert teachers["test_accuracy"] == pytest.approx(each, abs=1e-12)
    assert f"**{100 * ensemble:.2f}**" in (out / "quality.md").read_text()


@pytest.mark.ray
@pytest.mark.slow
def test_each_row_is_its_own_training_run(quick: tuple[Path, dict[str, Any]]) -> None:
    from raykd.data import load_dataset
    from raykd.models import load_checkpoint, weights_hash
    from raykd.train.steps import accuracy, predict_logits

    _, result = quick
    data = load_dataset("digits", val_fraction=0.1, test_fraction=0.2, seed=0)
    for _, sc in _scenarios(result):
        for seed in (0, 1):
            runs = {row: sc["finals"][row][seed] for row in ROW_NAMES}
            paths = [r["checkpoint"] for r in runs.values()]
            assert len(set(paths)) == len(paths)
            hashes = []
            for r in runs.values():
                model = load_checkpoint(r["checkpoint"])
                hashes.append(weights_hash(model))
                assert hashes[-1] == r["weights_hash"]
                assert accuracy(predict_logits(model, data.test.x), data.test.y) == pytest.approx(
                    r["test_accuracy"]
                )
            assert len(set(hashes)) == len(hashes), "two rows share their weights"
            assert runs["born-again"]["gen1_checkpoint"] == runs["kd"]["checkpoint"]


# --- raykd bench wkd: statistics on known inputs, and a tiny run without Ray -----------


def test_wkd_paired_statistics_on_known_inputs() -> None:
    from raykd.bench.wkd_stats import compare, signed_rank_p

    c = compare([1.0, 2.0, 3.0, 4.0, 5.0], [0.0] * 5)
    assert (c["mean"], c["wins"], c["ties"], c["losses"], c["seeds"]) == (3.0, 5, 0, 0, 5)
    assert c["std"] == pytest.approx(math.sqrt(2.5))
    # t = 3 / (sqrt(2.5) / sqrt(5)) = 4.2426 on 4 degrees of freedom: two-sided p = 0.013236
    assert c["t_p"] == pytest.approx(0.0132356, abs=1e-6)
    assert c["wilcoxon_p"] == pytest.approx(2 / 32)  # every sign positive: 2 of 2**5 patterns
    mixed = compare([0.3, -0.1, 0.2, 0.5, 0.4, -0.25], [0.0] * 6)
    assert mixed["wilcoxon_p"] == pytest.approx(14 / 64)  # T+ = 18 of 21; 14 of 64 as far out
    assert mixed["t_p"] == pytest.approx(0.2031107, abs=1e-6)
    assert (mixed["wins"], mixed["losses"]) == (4, 2)
    ties = compare([0.8, 0.8, 0.9], [0.8, 0.7, 0.7])
    assert (ties["wins"], ties["ties"], ties["losses"]) == (2, 1, 0)
    assert ties["wilcoxon_p"] == pytest.approx(0.5)  # the zero is dropped: 2 of 2**2
    assert compare([0.7, 0.7], [0.7, 0.7])["t_p"] == 1.0
    # tied magnitudes |d| = 1, 1, 1, 2 (mid-ranks 2, 2, 2, 4): T+ = 8, 8 of 16 patterns as far
    assert signed_rank_p(np.array([1.0, 1.0, -1.0, 2.0])) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="two equal, non-empty lists"):
        compare([0.1], [0.1, 0.2])


def test_wkd_val_picked_chooses_per_seed_on_validation() -> None:
    from raykd.bench.wkd_stats import val_picked

    def runs(vals: list[float], tests: list[float]) -> list[dict[str, Any]]:
        return [{"seed": s, "val_accuracy": v, "test_accuracy": t}
                for s, (v, t) in enumerate(zip(vals, tests, strict=True))]

    finals = {"kd": runs([0.5, 0.7], [0.50, 0.71]), "wkd W=0.5": runs([0.6, 0.7], [0.40, 0.90])}
    picked = val_picked(finals, ["kd", "wkd W=0.5"])
    assert [p["picked"] for p in picked] == ["wkd W=0.5", "kd"]  # seed 1 ties: the first row
    assert [p["test_accuracy"] for p in picked] == [0.40, 0.71]


def test_wkd_target_stats_follow_the_losses() -> None:
    from raykd.bench.wkd_stats import target_stats

    # 3 teachers, 2 examples of label 0. Example 0: teachers 0, 1 right; example 1: only
    # teacher 0 right; on both the plain average's arg-max is the wrong class 1.
    z = np.array([[[2.0, 0.0], [1.0, 0.0]],
                  [[2.0, 0.0], [0.0, 2.0]],
                  [[0.0, 5.0], [0.0, 2.0]]], dtype=np.float32)
    y = np.array([0, 0])
    kd = target_stats(z, y, method="kd", incorrect_weight=1.0, teacher_weights=None,
                      temperature=1.0)
    wkd = target_stats(z, y, method="wkd", incorrect_weight=0.1, teacher_weights=None,
                       temperature=1.0)
    assert kd["accuracy"] == 0.0 and wkd["accuracy"] == 1.0  # W=0.1 fixes both targets
    assert wkd["p_gold"] > kd["p_gold"]
    favour_first = target_stats(z, y, method="kd", incorrect_weight=1.0,
                                teacher_weights=[2.8, 0.1, 0.1], temperature=1.0)
    assert favour_first["accuracy"] == 1.0


def _synthetic_teachers(y: np.ndarray, accuracy: float, classes: int, seed: int) -> np.ndarray:
    """(N, C) logits whose arg-max is the label on about ``accuracy`` of the rows."""
    rng = np.random.default_rng(seed)
    wrong = (y + rng.integers(1, classes, len(y))) % classes
    top = np.where(rng.random(len(y)) < accuracy, y, wrong)
    return (3.0 * np.eye(classes)[top] + rng.normal(0, 0.5, (len(y), classes))).astype(np.float32)


def test_wkd_bench_tables_from_a_tiny_run_without_ray(tmp_path: Path) -> None:
    from raykd.bench.quality_runs import RunData, train_run
    from raykd.bench.wkd import (
        EnsembleLogits,
        assemble_dataset,
        ensemble_summary,
        submit_dataset,
    )
    from raykd.bench.wkd_plan import CURVE_ROWS, WKD_ROWS, WkdPlan, ensembles
    from raykd.bench.wkd_report import render, write_all
    from raykd.bench.wkd_stats import PICKED
    from raykd.data import load_dataset

    data = load_dataset("digits", val_fraction=0.1, test_fraction=0.2, seed=0, train_limit=120)
    plan = WkdPlan("digits", 120, ensembles({"name": "mlp", "hidden": [8]}, {"name": "linear"}),
                   students=(("smaller", {"name": "mlp", "hidden": [4]}),),
                   teacher_train={"epochs": 1, "batch_size": 64},
                   train={"epochs": 1, "batch_size": 64, "lr": 3e-3, "weight_decay": 0.0},
                   seeds=2)
    teachers = []
    for i, (ens, accs) in enumerate(zip(plan.ensembles, [(0.9, 0.9, 0.9), (0.9, 0.6, 0.4)],
                                        strict=True)):
        logits = {split: np.stack([_synthetic_teachers(getattr(data, split).y, a, 10, 10 * i + m)
                                   for m, a in enumerate(accs)])
                  for split in ("train", "val", "test")}
        summary = ensemble_summary(ens, logits, data, temperature=plan.temperature)
        teachers.append(EnsembleLogits(ens.name, logits, summary))
    split = RunData(data.train.x, data.train.y, data.val.x, data.val.y, data.test.x, data.test.y)
    by_name = {t.name: t.logits["train"] for t in teachers}

    def launch(job: Any, params: dict[str, float], key: Any) -> list[dict[str, Any]]:
        return train_run(job, params, split, None if key is None else by_name[key])

    handles = submit_dataset(plan, data, teachers, 2, tmp_path, launch)
    section = assemble_dataset(plan, data, teachers, handles, lambda h: h, 2)
    result = {"command": "test", "wall_seconds": 1.0, "started": "now",
              "datasets": {"digits": section}}
    write_all(result, tmp_path)

    unequal = section["ensembles"]["unequal"]
    assert unequal["val_accuracy_weights"][0] > unequal["val_accuracy_weights"][2]
    assert unequal["disagreement"]["train"]["some_wrong"] > 0.3
    targets = unequal["targets"]  # a smaller W moves the target towards the label
    assert targets["wkd W=0.05"]["accuracy"] > targets["wkd W=0.5"]["accuracy"] > \
        targets["kd"]["accuracy"]
    names = ["none", *(r.name for r in WKD_ROWS)]
    md = (tmp_path / "wkd.md").read_text()
    for sc_name in ("equal/smaller", "unequal/smaller"):
        sc = section["scenarios"][sc_name]
        assert list(sc["finals"]) == names
        assert list(sc["summary"]["rows"]) == [*names, PICKED]
        for row in names:
            assert [r["seed"] for r in sc["finals"][row]] == [0, 1]
            assert f"| {row} |" in md or f"| **{row}** |" in md
        kd = [r["test_accuracy"] for r in sc["finals"]["kd"]]
        w05 = [r["test_accuracy"] for r in sc["finals"]["wkd W=0.05"]]
        assert sc["summary"]["vs_kd"]["wkd W=0.05"]["diffs"] == pytest.approx(
            [a - b for a, b in zip(w05, kd, strict=True)])
        assert sc["summary"]["rows"][PICKED]["picked"][0] in CURVE_ROWS
        assert f"### digits: {sc_name}" in md
    assert section["scenarios"]["equal/smaller"]["finals"]["none"] == \
        section["scenarios"]["unequal/smaller"]["finals"]["none"]  # one student alone, shared
    for name in ("wkd.json", "wkd_digits.png", "wkd_tracks.png"):
        assert (tmp_path / name).stat().st_size > 0
    render(tmp_path)
    assert (tmp_path / "wkd.md").read_text() == md


def test_wkd_bad_seeds_is_a_user_error(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from raykd.cli import app

    got = CliRunner().invoke(app, ["bench", "wkd", "--seeds", "1", "--out", str(tmp_path)])
    assert got.exit_code == 2 and "--seeds=1" in got.output
