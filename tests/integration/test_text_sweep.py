"""A sweep over W on a text classification job: the teachers' logits are computed once and
shared by every trial, the best trial is the one with the best validation accuracy, and the
final student scores on test what the sweep reports."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from raykd.core.spec import parse_spec
from raykd.train.steps import accuracy, predict_logits
from tests.helpers.text import text_spec

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def test_a_text_sweep_shares_one_teacher_pass_and_keeps_the_best_trial(
        ray_local: None, tmp_path: Path) -> None:
    from raykd.data import load_dataset
    from raykd.models import load_checkpoint
    from raykd.tune import run_sweep

    base = text_spec(tmp_path, "bbc-sweep")
    spec = parse_spec({
        **base, "teachers": base["teachers"][:1],
        "methods": [{"method": "wkd", "temperature": 2.0, "alpha": 0.5, "incorrect_weight": 0.75}],
        "sweep": {"searcher": "grid", "scheduler": "fifo",
                  "incorrect_weight": {"values": [0.5, 1.0]}},
    })
    result: dict[str, Any] = run_sweep(spec, job_dir=tmp_path / "sweep", log=lambda _: None)

    assert len(result["trials"]) == 2
    assert {t["incorrect_weight"] for t in result["trials"]} == {0.5, 1.0}
    best = max(result["trials"], key=lambda t: t["val_accuracy"])
    assert result["best"]["val_accuracy"] == best["val_accuracy"]
    # one teacher pass over the training split, shared by both trials
    assert result["logit_cache"]["teacher"]["train"]["teacher_forward_examples"] == 160

    data = load_dataset("bbc-news", train_limit=160, seed=0)
    final = result["final"]
    logits = predict_logits(load_checkpoint(final["checkpoint"]), data.test.x)
    assert final["test_accuracy"] == pytest.approx(accuracy(logits, data.test.y))
