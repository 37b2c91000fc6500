"""Batch sharding for DDP: every rank runs the same number of equal, disjoint steps.

DDP blocks in its all-reduce when one rank runs a step the others do not, and averages
gradients as if every rank's batch were the same size; these tests pin both down for any
split size, batch size and world size, including splits smaller than the global batch.
"""

from __future__ import annotations

from math import lgamma

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raykd.core.errors import UserError
from raykd.data import DataError
from raykd.train.steps import check_sharding, epoch_batches, local_batch_size, steps_per_epoch


def shards(n: int, batch: int, world: int, epoch: int, seed: int = 0) -> list[list[np.ndarray]]:
    """Each rank's list of index batches for one epoch."""
    return [list(epoch_batches(n, batch_size=batch, seed=seed, epoch=epoch, rank=r,
                               world_size=world)) for r in range(world)]


def log_arrangements(n: int, local: int, parts: int) -> float:
    """log of the number of distinct epochs: ordered choices of ``parts`` sets of ``local`` rows."""
    return lgamma(n + 1) - parts * lgamma(local + 1) - lgamma(n - parts * local + 1)


@st.composite
def layouts(draw: st.DrawFn) -> tuple[int, int, int]:
    world = draw(st.integers(1, 8))
    n = draw(st.integers(world, 700))
    batch_size = draw(st.integers(world, 300))
    return n, batch_size, world


@settings(max_examples=150, deadline=None)
@given(layout=layouts(), seed=st.integers(0, 2**31))
def test_every_rank_runs_the_same_equal_disjoint_steps(layout: tuple[int, int, int],
                                                       seed: int) -> None:
    n, batch_size, world = layout
    steps = steps_per_epoch(n, batch_size=batch_size, world_size=world)
    epochs = []
    for epoch in range(3):
        per_rank = shards(n, batch_size, world, epoch, seed)
        assert steps >= 1
        assert [len(r) for r in per_rank] == [steps] * world  # as many steps as steps_per_epoch
        sizes = {len(b) for r in per_rank for b in r}
        assert len(sizes) == 1 and sizes.pop() >= 1  # one non-empty size on every rank and step
        local = len(per_rank[0][0])
        assert local * world <= batch_size  # never more than the global batch asked for
        flat = np.concatenate([b for r in per_rank for b in r])
        assert ((flat >= 0) & (flat < n)).all()
        assert len(np.unique(flat)) == len(flat) == steps * local * world  # disjoint, no repeats
        assert n - len(flat) < local * world  # only a tail short of one global batch is left out
        if n % (local * world) == 0:
            assert len(flat) == n
        epochs.append([tuple(b) for r in per_rank for b in r])
    if log_arrangements(n, local, steps * world) > np.log(1e3):  # a repeat is < 1e-6 likely
        assert not epochs[0] == epochs[1] == epochs[2]


@settings(max_examples=60, deadline=None)
@given(world=st.integers(2, 64), n=st.integers(0, 64), batch_size=st.integers(1, 64))
def test_impossible_sharding_is_a_data_error(world: int, n: int, batch_size: int) -> None:
    if n >= world and batch_size >= world:
        check_sharding(n, batch_size=batch_size, world_size=world)
        return
    names = r"scaling\.num_workers=.*train\.batch_size=|train\.batch_size=.*scaling\.num_workers="
    with pytest.raises(DataError, match=names):
        check_sharding(n, batch_size=batch_size, world_size=world)
    with pytest.raises(DataError):
        steps_per_epoch(n, batch_size=batch_size, world_size=world)
    with pytest.raises(DataError):
        epoch_batches(n, batch_size=batch_size, seed=0, epoch=0, rank=0, world_size=world)


def test_split_smaller_than_the_global_batch_gives_both_ranks_equal_steps() -> None:
    for n in (50, 51, 100):
        per_rank = shards(n, 128, 2, epoch=0)
        assert [len(r) for r in per_rank] == [1, 1]
        assert len(per_rank[0][0]) == len(per_rank[1][0]) == n // 2
        assert not set(per_rank[0][0]) & set(per_rank[1][0])
        assert steps_per_epoch(n, batch_size=128, world_size=2) == 1
    assert local_batch_size(50, batch_size=128, world_size=2) == 25


def test_one_row_per_worker_is_the_smallest_split() -> None:
    check_sharding(2, batch_size=128, world_size=2)
    with pytest.raises(DataError) as info:
        check_sharding(1, batch_size=128, world_size=2)
    message = str(info.value)
    assert isinstance(info.value, UserError)
    for part in ("1 rows", "scaling.num_workers=2", "train.batch_size=128",
                 "scaling.num_workers <= 1"):
        assert part in message
    with pytest.raises(DataError, match=r"train\.batch_size=1 .*use train\.batch_size >= 2"):
        check_sharding(10, batch_size=1, world_size=2)


def test_single_process_keeps_its_batches() -> None:
    """Teachers and benches (world 1): whole batches, or the whole split when it is smaller."""
    assert [len(b) for b in epoch_batches(10, batch_size=64, seed=0, epoch=0)] == [10]
    assert [len(b) for b in epoch_batches(130, batch_size=64, seed=0, epoch=0)] == [64, 64]
    assert steps_per_epoch(130, batch_size=64) == 2


# --- the checks a step no longer repeats run once, before the first epoch -------------


def _loop_data(teacher_train: object, y: np.ndarray | None = None) -> object:
    from raykd.train.loop import LoopData

    y = np.arange(12) % 3 if y is None else y
    x = np.zeros((12, 4), np.float32)
    return LoopData(x_train=x, y_train=y, x_val=x[:2], y_val=y[:2], teacher_train=teacher_train)


def test_loop_data_with_nan_teacher_logits_is_a_clear_error_before_training() -> None:
    from raykd.losses.topk import to_topk
    from raykd.train.loop import check_loop_data

    logits = np.zeros((2, 12, 3), np.float32)
    check_loop_data(_loop_data(logits), num_classes=3)
    logits[1, 5, 2] = np.nan
    with pytest.raises(DataError, match="cached logits of teacher 1 contain NaN/inf"):
        check_loop_data(_loop_data(logits), num_classes=3)
    with pytest.raises(DataError, match="teacher 1 contain NaN/inf"):
        check_loop_data(_loop_data(to_topk(logits, 1)), num_classes=3)
    with pytest.raises(DataError, match=r"shape \(2, 12, 3\); expected \(M, 12, 4\)"):
        check_loop_data(_loop_data(np.zeros((2, 12, 3), np.float32)), num_classes=4)


def test_loop_data_with_labels_out_of_range_is_a_clear_error() -> None:
    from raykd.train.loop import check_loop_data

    with pytest.raises(DataError, match=r"in \[0, 3\), got min 0, max 3"):
        check_loop_data(_loop_data(None, y=np.arange(12) % 4), num_classes=3)


def test_run_student_checks_cached_logits_once_at_the_edge() -> None:
    from raykd.core.spec import MethodSpec, TrainSpec
    from raykd.train.config import StudentConfig
    from raykd.train.loop import run_student

    logits = np.zeros((2, 12, 3), np.float32)
    logits[0, 0, 0] = np.inf
    config = StudentConfig(model={"name": "mlp"}, input_shape=(4,), num_classes=3,
                           method=MethodSpec(method="kd", temperature=2.0, alpha=0.5),
                           train=TrainSpec(epochs=1, batch_size=4, lr=1e-3, seed=0),
                           augment=False, threads=1, label="nan")
    with pytest.raises(DataError, match="teacher 0 contain NaN/inf"):
        run_student(config, _loop_data(logits), report=lambda metrics, state: None)


# --- learning-rate schedule and gradient accumulation --------------------------------


def test_linear_schedule_warms_up_then_decays_to_the_last_step() -> None:
    from raykd.train.steps import lr_factor

    got = [lr_factor(s, 10, schedule="linear", warmup_fraction=0.2) for s in range(10)]
    assert got[:2] == [0.5, 1.0]  # 2 warm-up steps: 1/2, 2/2
    assert got[2:] == [8 / 8, 7 / 8, 6 / 8, 5 / 8, 4 / 8, 3 / 8, 2 / 8, 1 / 8]
    assert [lr_factor(s, 10) for s in range(10)] == [1.0] * 10
    assert lr_factor(0, 4, schedule="linear") == 1.0  # no warm-up: decay from the first step


def _trained_weights(batch_size: int, accum: int, epochs: int = 2) -> dict[str, object]:
    import torch

    from raykd.core.spec import MethodSpec, TrainSpec
    from raykd.train.config import StudentConfig
    from raykd.train.loop import LoopData, run_student

    rng = np.random.default_rng(0)
    x = rng.standard_normal((48, 5)).astype(np.float32)
    y = rng.integers(0, 3, 48)
    teacher = rng.standard_normal((2, 48, 3)).astype(np.float32)
    config = StudentConfig(model={"name": "mlp", "hidden": [8]}, input_shape=(5,), num_classes=3,
                           method=MethodSpec(method="kd", temperature=2.0, alpha=0.5),
                           train=TrainSpec(epochs=epochs, batch_size=batch_size, lr=0.05, seed=3,
                                           grad_accum_steps=accum, schedule="linear",
                                           warmup_fraction=0.25),
                           threads=1, label="accum")
    states: list[dict[str, torch.Tensor]] = []

    def keep(metrics: dict[str, object], state: object) -> None:
        states.append({k: v.clone() for k, v in state.model.state_dict().items()})  # type: ignore[attr-defined]

    run_student(config, LoopData(x_train=x, y_train=y, x_val=x[:6], y_val=y[:6],
                                 teacher_train=teacher), report=keep)
    return states[-1]


def test_accumulating_two_half_batches_is_one_step_of_the_whole_batch() -> None:
    """Batch 8 x 2 micro-batches per step sees the same rows per optimizer step as batch 16
    (the epoch's permutation cut into 8s, two at a time, is the same as cut into 16s): the
    weights after two epochs agree to float rounding; without accumulation they do not."""
    import torch

    whole, accumulated, single = _trained_weights(16, 1), _trained_weights(8, 2), _trained_weights(8, 1)
    for name, w in whole.items():
        torch.testing.assert_close(accumulated[name], w, rtol=1e-4, atol=1e-5)
    assert any(not torch.allclose(single[k], whole[k], atol=1e-3) for k in whole)
