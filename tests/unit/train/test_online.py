"""Online serving in the student's process (raykd.train.online): no Ray, real threads.

What a user relies on: the in-process ensemble serves exactly what each teacher computes,
every step trains on the logits of its own (augmented) rows although the teachers run a
step ahead in another thread, a NaN teacher stops the run with a named error, and the
teachers' thread is gone when the run ends, however it ends.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from raykd.core.spec import MethodSpec, TrainSpec
from raykd.data.splits import DataError
from raykd.train.config import StudentConfig
from raykd.train.loop import LoopData, _batches, student_epochs
from raykd.train.online import LocalEnsemble, split_threads
from raykd.train.steps import epoch_batches, node_cpus, set_threads
from tests.helpers.checkpoints import tiny_teachers

ROWS, BATCH, EPOCHS = 96, 16, 2


class RowNamer(nn.Module):
    """A stand-in teacher: logits (row id, teacher index, 0, ...) for each row.

    Row i of the test's images is the constant image i; after augmentation (a shift of at
    most one pixel with zero fill, noise of 0.1) the median of its pixels still rounds to i.
    """

    def __init__(self, index: int, num_classes: int = 10, nan: bool = False) -> None:
        super().__init__()
        self.index, self.num_classes, self.nan = index, num_classes, nan

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(len(x), self.num_classes)
        out[:, 0] = x.reshape(len(x), -1).median(dim=1).values.round()
        out[:, 1] = float("nan") if self.nan else self.index
        return out


def row_images() -> tuple[np.ndarray, np.ndarray]:
    rows = np.arange(ROWS, dtype=np.float32)[:, None, None, None]
    x = np.broadcast_to(rows, (ROWS, 1, 8, 8)).copy()
    return x, (np.arange(ROWS) % 10).astype(np.int64)


def student(**train: object) -> StudentConfig:
    return StudentConfig(model={"name": "linear"}, input_shape=(1, 8, 8), num_classes=10,
                         method=MethodSpec(method="kd"), augment=True, threads=2,
                         train=TrainSpec(epochs=EPOCHS, batch_size=BATCH, lr=0.01, seed=5, **train))


def teacher_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("raykd-teachers")]


def test_the_in_process_ensemble_serves_what_each_teacher_computes(tmp_path: Path) -> None:
    from raykd.teachers import Teacher

    configs = tiny_teachers(tmp_path)
    x = np.random.default_rng(0).normal(size=(5, 6)).astype(np.float32)
    set_threads(2)  # read at once: this thread keeps 2
    ensemble = LocalEnsemble(configs, (6,), 3, threads=3)
    try:
        assert ensemble._pool.submit(torch.get_num_threads).result() == 3  # its own count
        assert torch.get_num_threads() == 2  # and this thread keeps its own
        alone = np.stack([Teacher(i, c["model"], (6,), 3, checkpoint=c["checkpoint"]).logits(x)
                          for i, c in enumerate(configs)])
        np.testing.assert_array_equal(ensemble.logits(x), alone)
        np.testing.assert_array_equal(ensemble.send(x).result(), alone)  # from its own thread
        assert ensemble.requests == 2
    finally:
        ensemble.close()
    assert not teacher_threads()


def test_each_step_gets_the_logits_of_its_own_augmented_rows(tmp_path: Path) -> None:
    """The step ahead pairs batch i with the logits of batch i, not i+1, in every epoch."""
    x, y = row_images()
    ensemble = LocalEnsemble([], (1, 8, 8), 10, threads=1)
    ensemble.models = [RowNamer(0), RowNamer(1)]
    data = LoopData(x_train=x, y_train=y, x_val=x, y_val=y)
    try:
        for epoch in range(EPOCHS):
            gen = torch.Generator().manual_seed(epoch)
            steps = list(_batches(data, student(), epoch, 0, 1, gen, ensemble))
            expected = [sorted(idx) for idx in epoch_batches(ROWS, batch_size=BATCH, seed=5,
                                                             epoch=epoch, rank=0, world_size=1)]
            assert len(steps) == len(expected) == ROWS // BATCH
            for n, (xb, yb, tl) in enumerate(steps):
                rows = np.round(np.median(xb.reshape(len(xb), -1).numpy(), axis=1))
                assert (xb.numpy() != np.round(xb.numpy())).any(), n  # augmented
                assert sorted(rows.tolist()) == expected[n], n
                assert tl.shape == (2, BATCH, 10)
                assert tl[0, :, 0].tolist() == rows.tolist() == tl[1, :, 0].tolist(), n
                assert tl[:, :, 1].tolist() == [[0.0] * BATCH, [1.0] * BATCH], n
                assert yb.tolist() == [int(r) % 10 for r in rows], n
        assert ensemble.requests == EPOCHS * ROWS // BATCH
    finally:
        ensemble.close()


def test_a_nan_teacher_in_process_stops_the_run_with_its_index_and_leaves_no_thread(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    x, y = row_images()
    models = [RowNamer(0), RowNamer(1, nan=True)]

    def load(path: str, **_: object) -> nn.Module:
        return models[int(path)]

    monkeypatch.setattr("raykd.train.online.load_checkpoint", load)
    configs = [{"model": {"name": "linear"}, "checkpoint": str(i)} for i in range(2)]
    data = LoopData(x_train=x, y_train=y, x_val=x[:8], y_val=y[:8], teacher_local=configs)
    with pytest.raises(DataError, match=r"teachers \[1\] served NaN/inf logits"):
        list(student_epochs(student(), data))
    assert not teacher_threads()


def test_a_run_served_in_process_trains_and_ends_its_teachers_thread(tmp_path: Path) -> None:
    """student_epochs with teacher configs: it learns, halves its threads, leaves no thread."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 6)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 0)
    config = StudentConfig(model={"name": "mlp", "hidden": [16]}, input_shape=(6,), num_classes=3,
                           method=MethodSpec(method="kd"), threads=2,
                           train=TrainSpec(epochs=3, batch_size=32, lr=0.01))
    data = LoopData(x_train=x, y_train=y, x_val=x, y_val=y, teacher_local=tiny_teachers(tmp_path))
    epochs = student_epochs(config, data)
    metrics, _ = next(epochs)
    assert torch.get_num_threads() == split_threads(2, node_cpus())[0]
    assert len(teacher_threads()) == 1
    history = [metrics, *(m for m, _ in epochs)]
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert all(np.isfinite(h["train_loss"]) for h in history)
    assert not teacher_threads()
    assert torch.get_num_threads() == 2  # given back: the actor's next student gets both


@pytest.mark.parametrize(("worker", "cpus", "workers", "expected"), [
    (2, 2, 1, (1, 1)),    # the node full: the worker's two threads halved
    (1, 2, 1, (1, 1)),    # one spare CPU: the teachers take it, as an ensemble actor would
    (1, 16, 1, (1, 15)),  # a big node: the student keeps its thread, the teachers the rest
    (8, 16, 1, (8, 8)),
    (1, 16, 2, (1, 7)),   # two workers share what they leave
    (2, 4, 2, (1, 1)),
    (4, 2, 1, (2, 2)),    # more threads than CPUs (an over-asked node): still halved
])
def test_the_teachers_get_what_the_students_leave_or_half_a_full_worker(
        worker: int, cpus: int, workers: int, expected: tuple[int, int]) -> None:
    assert split_threads(worker, cpus, workers) == expected


@pytest.mark.parametrize(("scaling", "in_process"), [
    ({}, True),                                               # auto, one worker, CPUs
    ({"num_workers": 2}, False),                              # auto, DDP: ensemble actors
    ({"online_teachers": "actors"}, False),
    ({"num_workers": 2, "online_teachers": "in_process"}, True),  # every worker loads them
])
def test_where_online_teachers_run_on_cpus(scaling: dict[str, object], in_process: bool) -> None:
    from raykd.core.spec import parse_spec
    from raykd.engine.cluster import online_in_process
    from tests.helpers.specs import digits_spec

    spec = parse_spec(digits_spec("runs", data={"dataset": "digits", "augment": True},
                                  scaling={"use_gpu": False, **scaling}))
    assert online_in_process(spec) is in_process


def test_teachers_in_process_beside_gpu_students_are_refused_in_the_spec() -> None:
    from raykd.core.spec import SpecError, parse_spec
    from tests.helpers.specs import digits_spec

    with pytest.raises(SpecError, match=r"scaling.online_teachers='in_process' runs the teachers "
                                        r"on the student workers' CPU threads, but "
                                        r"scaling.use_gpu is true; use online_teachers 'actors'"):
        parse_spec(digits_spec("runs", scaling={"use_gpu": True, "online_teachers": "in_process"}))


def test_teacher_replicas_with_teachers_in_process_are_refused_in_the_spec() -> None:
    from raykd.core.spec import SpecError, parse_spec
    from tests.helpers.specs import digits_spec

    scaling = {"use_gpu": False, "online_teachers": "in_process", "teacher_replicas": 2}
    with pytest.raises(SpecError, match=r"scaling.teacher_replicas=2 copies the teachers' ensemble "
                                        r"actor, but online_teachers 'in_process' runs no teacher"):
        parse_spec(digits_spec("runs", scaling=scaling))
    scaling["online_teachers"] = "actors"
    assert parse_spec(digits_spec("runs", scaling=scaling)).scaling.teacher_replicas == 2
