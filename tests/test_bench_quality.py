"""``raykd bench quality --quick`` on a real local Ray, and the report's pure functions."""

from __future__ import annotations

import json
from collections.abc import Iterator
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
def quick(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, Any]]]:
    import ray

    from raykd.bench.quality import run_quality_bench
    from raykd.engine.prepare import ensure_ray

    if ray.is_initialized():
        ray.shutdown()
    ensure_ray(num_cpus=2)
    out = tmp_path_factory.mktemp("bench-quality")
    result = run_quality_bench(out=out, quick=True, log=lambda line: None)
    yield out, result
    ray.shutdown()


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
