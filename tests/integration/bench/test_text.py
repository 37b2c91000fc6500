"""The text benches' quick versions: tables written with their rows, paired differences and
ratios, each number traceable to the per-seed runs and measures in the JSON.

Tiny random BERTs (1-2 layers, width 32) with the packaged MiniLM tokenizer on BBC News
(160 training articles for the quality bench) and on bbc-speakers (100 training questions in
windows of 128 tokens for the span bench), through raykd's real teacher stage, teacher actor
and student loop.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from raykd.bench.span_quality import run_span_quality
from raykd.bench.text_quality import PAIRS, ROWS, run_text_quality
from raykd.bench.text_report import paired, spread
from raykd.bench.text_speed import run_text_speed

pytestmark = [pytest.mark.ray, pytest.mark.slow]


@pytest.fixture(scope="module")
def quality(ray_local: None, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    out, results = tmp_path_factory.mktemp("tq"), tmp_path_factory.mktemp("results")
    run_text_quality(out, quick=True, results=results, log=lambda line: None)
    return out, results


def test_quality_table_has_every_row_and_paired_difference(quality: tuple[Path, Path]) -> None:
    out, results = quality
    md = (out / "text_quality.md").read_text()
    assert (results / "text_quality.md").read_text() == md
    data: dict[str, Any] = json.loads((results / "text_quality.json").read_text())
    assert data["seeds"] == 2 and data["data"]["train"] == 160
    for row in ROWS:
        assert f"| {row.name} | " in md
    for a, b in PAIRS:
        assert f"| {a} - {b} | " in md
    assert "ensemble (mean logits)" in md and md.count("| teacher ") == 3
    # every teacher trained by raykd's teacher stage; every row has a run per seed
    assert all(t["trained_by_raykd"] for t in data["teachers"]["rows"])
    runs = data["runs"]
    assert sorted((r["row"], r["seed"]) for r in runs) == sorted(
        (row.name, s) for row in ROWS for s in (0, 1))
    # the summary is the runs' numbers: mean ± sd, and differences taken per seed
    by = {(r["row"], r["seed"]): r for r in runs}
    kd = [by["kd", s]["test_macro_f1"] for s in (0, 1)]
    assert data["summary"]["rows"]["kd"]["test_macro_f1"]["mean"] == pytest.approx(np.mean(kd))
    diff = data["summary"]["differences"]["kd - none"]["test_accuracy"]
    per_seed = [by["kd", s]["test_accuracy"] - by["none", s]["test_accuracy"] for s in (0, 1)]
    assert diff["values"] == pytest.approx(per_seed)
    assert diff["sd"] == pytest.approx(np.std(per_seed, ddof=1))


def test_rerun_reuses_the_teachers(quality: tuple[Path, Path], ray_local: None) -> None:
    out, _ = quality
    again = run_text_quality(out, quick=True, seeds=1, log=lambda line: None)
    cache = again["teachers"]["logit_cache"]
    assert all(split["teacher_forward_examples"] == 0 for split in cache.values())
    assert len(again["runs"]) == len(ROWS)


@pytest.fixture(scope="module")
def spans(ray_local: None, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    out, results = tmp_path_factory.mktemp("sq"), tmp_path_factory.mktemp("span-results")
    run_span_quality(out, quick=True, results=results, log=lambda line: None)
    return out, results


def test_span_table_has_every_row_squad_scores_and_paired_differences(
        spans: tuple[Path, Path]) -> None:
    out, results = spans
    md = (out / "span_quality.md").read_text()
    assert (results / "span_quality.md").read_text() == md
    data: dict[str, Any] = json.loads((results / "span_quality.json").read_text())
    assert data["seeds"] == 2 and data["plan"]["train_limit"] == 100
    assert md.count("| teacher ") == 2 and "| ensemble (mean logits) | " in md
    for row in ROWS:
        assert f"| {row.name} | " in md
    for a, b in PAIRS:
        assert f"| {a} - {b} | " in md
    assert all(t["trained_by_raykd"] for t in data["teachers"]["rows"])
    runs = data["runs"]
    assert sorted((r["row"], r["seed"]) for r in runs) == sorted(
        (row.name, s) for row in ROWS for s in (0, 1))
    # SQuAD v2.0 scores in percent over every test question, for teachers, ensemble, students
    scored = [t["span"]["test"] for t in data["teachers"]["rows"]]
    scored += [data["teachers"]["ensemble"]["span"]["test"], *(r["test"] for r in runs)]
    for test in scored:
        assert test["total"] == 295  # bbc-speakers' test questions (split by article, seed 0)
        assert test["HasAns_total"] > 0 and test["NoAns_total"] > 0
        for key in ("exact", "f1", "HasAns_f1", "NoAns_f1"):
            assert 0.0 <= test[key] <= 100.0
        assert test["exact"] <= test["f1"] + 1e-9
    # each run keeps its best-validation-F1 epoch
    for r in runs:
        assert r["val_f1"] == pytest.approx(max(h["val_f1"] for h in r["history"]))
        assert r["history"][r["best_epoch"] - 1]["val_f1"] == pytest.approx(r["val_f1"])
    # the summary is the runs' numbers: mean ± sd, and differences taken per seed
    by = {(r["row"], r["seed"]): r for r in runs}
    f1 = [by["wkd W=0.75", s]["test_f1"] for s in (0, 1)]
    assert data["summary"]["rows"]["wkd W=0.75"]["test_f1"]["mean"] == pytest.approx(np.mean(f1))
    assert f"{np.mean(f1):.1f} ± {np.std(f1, ddof=1):.1f}" in md
    for a, b in PAIRS:
        diff = data["summary"]["differences"][f"{a} - {b}"]["test_exact"]
        per_seed = [by[a, s]["test_exact"] - by[b, s]["test_exact"] for s in (0, 1)]
        assert diff["values"] == pytest.approx(per_seed)
        assert diff["sd"] == pytest.approx(np.std(per_seed, ddof=1))


def test_span_rerun_trains_no_teacher(spans: tuple[Path, Path], ray_local: None) -> None:
    out, _ = spans
    again = run_span_quality(out, quick=True, seeds=1, log=lambda line: None)
    assert not any(t["trained_by_raykd"] for t in again["teachers"]["rows"])
    cache = again["teachers"]["logit_cache"]
    assert all(split["teacher_forward_examples"] == 0 for split in cache.values())
    assert len(again["runs"]) == len(ROWS)


def test_text_scenario_is_checked() -> None:
    from raykd.bench import BenchOptionError
    from raykd.bench.span_quality import run_text_scenarios

    with pytest.raises(BenchOptionError, match="--text-scenario='squad'.*bbc-speakers"):
        run_text_scenarios(Path("unused"), scenario="squad")


def test_quick_and_full_plans_never_share_a_teachers_directory(tmp_path: Path) -> None:
    """``--quick`` then the full run (or back) in one ``out``: each plan's teachers get their
    own job directory (one data fingerprint each), for BBC News and bbc-speakers alike."""
    from raykd.bench import span_quality, text_quality
    from raykd.bench.text_quality import teachers_dir

    dirs = [teachers_dir(bench.QUICK_PLAN, tmp_path, quick=True)
            for bench in (text_quality, span_quality)]
    dirs += [teachers_dir(bench.FULL_PLAN, tmp_path, quick=False)
             for bench in (text_quality, span_quality)]
    assert [d.name for d in dirs] == [
        "bench-text-quality-quick-teachers", "bench-span-quality-quick-teachers",
        "bench-text-quality-full-teachers", "bench-span-quality-full-teachers"]
    assert all(d.parent == tmp_path for d in dirs)


def test_the_text_bench_runs_bbc_news_unless_told_otherwise() -> None:
    """``raykd bench quality --text`` is the cheaper BBC News scenario; the help says how to
    run bbc-speakers or both."""
    import inspect

    from typer.testing import CliRunner

    from raykd.bench.span_quality import run_text_scenarios
    from raykd.cli import app

    assert inspect.signature(run_text_scenarios).parameters["scenario"].default == "bbc-news"
    help_text = " ".join(CliRunner().invoke(app, ["bench", "quality", "--help"],
                                            env={"COLUMNS": "200"}).output.split())
    assert "[default: bbc-news]" in help_text
    assert "--text-scenario bbc-speakers, or all for both in turn" in help_text


def test_speed_table_has_both_ratios_and_cache_bytes(ray_local: None, tmp_path: Path) -> None:
    result = run_text_speed(tmp_path, quick=True, log=lambda line: None)
    md = (tmp_path / "text_speed.md").read_text()
    assert json.loads((tmp_path / "text_speed.json").read_text())["rounds"] == 1
    names = [r["name"] for r in result["rows"]]
    assert names == ["teacher logits per second", "student steps per second"]
    for row in result["rows"]:
        raykd, plain = row["raykd"]["median"], row["plain"]["median"]
        assert raykd > 0 and plain > 0 and row["ratio"] == pytest.approx(raykd / plain)
        assert f"{row['ratio']:.2f}x" in md
        assert len(row["loads"]) == 2  # one (before, after) per measure of the round
    classification, spans = result["cache"]
    assert classification["bytes"] == 5 * 4  # 5 classes, float32
    assert spans["bytes"] < spans["padded"] == 2 * 384 * 4


def test_helpers_pair_by_seed() -> None:
    assert paired({0: 0.5, 1: 0.7, 2: 0.9}, {1: 0.6, 0: 0.5})["values"] == pytest.approx([0.0, 0.1])
    assert spread([0.5])["sd"] == 0.0
