"""The top-k sparse form of teacher logits in every place: through the disk cache, joined
row-wise for class and span logits, refused at or above the class count, and the same
targets for a sweep's trials as for a run's students (a real job prefix on a local Ray).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import yaml

from raykd.core.jobdir import (
    resolve_spec_paths,
)
from raykd.core.spec import parse_spec
from raykd.engine.context import Job
from raykd.engine.prepare import Prepared, prepare
from raykd.engine.students import student_refs
from raykd.losses.topk import TopK, concat_rows, dense, to_topk
from raykd.teachers.cache import LogitCache, cache_key
from raykd.tune.driver import shared_inputs
from raykd.tune.space import plan_resources
from raykd.tune.trial import teacher_logits
from tests.helpers.cli import cli_exit, one_line_error
from tests.helpers.specs import digits_spec


def test_topk_entries_round_trip_through_the_disk_cache(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    z = rng.normal(size=(50, 10)).astype(np.float32)
    sparse = to_topk(z, 3)
    cache = LogitCache(tmp_path)
    key = cache_key(weights="w", model="m", fingerprint="f", split="train", topk=3)
    assert key != cache_key(
        weights="w", model="m", fingerprint="f", split="train"
    )  # dense and top-k never mix
    cache.put(key, sparse)
    got = cache.get(key)
    assert isinstance(got, TopK) and got.num_classes == 10
    for a, b in zip(got, sparse, strict=True):
        np.testing.assert_array_equal(a, b)
    assert list(tmp_path.glob("*.npz")) and not list(tmp_path.glob("*.npy"))
    both = concat_rows(
        TopK(*[np.stack([f, f]) for f in sparse[:3]], 10),
        TopK(*[np.stack([f, f]) for f in sparse[:3]], 10),
    )
    assert dense(both).shape == (2, 100, 10)


def test_concat_rows_joins_examples_of_class_and_span_logits() -> None:
    """train+val for a sweep's final student: (M, N, C) and span windows' (M, N, 2, L) alike
    gain rows on the example axis, each teacher's rows kept in order."""
    rng = np.random.default_rng(0)
    for shape in ((3, 5, 10), (3, 5, 2, 64)):
        a, b = rng.normal(size=shape), rng.normal(size=(shape[0], 2, *shape[2:]))
        both = concat_rows(a, b)
        assert both.shape == (shape[0], 7, *shape[2:])
        np.testing.assert_array_equal(both[:, :5], a)
        np.testing.assert_array_equal(both[:, 5:], b)


def test_topk_at_or_above_the_class_count_is_a_spec_error(tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(digits_spec(str(tmp_path))))
    line = one_line_error(*cli_exit("run", str(spec), "--set", "cache.topk=10"))
    assert "cache.topk=10 must be below the number of classes (10)" in line


TOPK = 3


@pytest.fixture(scope="module")
def topk_prepared(
    ray_local: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Job, Prepared]]:
    """A real job prefix (2 small teachers trained on digits) of a spec with ``cache.topk: 3``."""
    root = tmp_path_factory.mktemp("topk")
    spec = resolve_spec_paths(
        parse_spec(
            digits_spec(
                str(root),
                cache={"topk": TOPK},
                methods=[{"method": "wkd"}],
                teachers=[{"model": {"name": "mlp", "hidden": [16]}, "seed": s} for s in (1, 2)],
                teacher_train={"epochs": 1, "batch_size": 64, "lr": 0.003},
                sweep={"searcher": "grid", "temperature": {"values": [2.0, 4.0]}},
            )
        )
    )
    job = Job(spec=spec, job_dir=root / "job", log=lambda _: None)
    prepared = prepare(job)
    yield job, prepared
    if prepared.teachers.pool is not None:  # the shared Ray's CPUs go back to the next module
        prepared.teachers.pool.shutdown()


def assert_topk(logits: object, *, teachers: int, rows: int) -> TopK:
    assert isinstance(logits, TopK), f"dense logits {type(logits).__name__} where cache.topk={TOPK}"
    assert logits.values.shape == logits.indices.shape == (teachers, rows, TOPK)
    assert logits.rest_lse.shape == (teachers, rows) and logits.num_classes == 10
    return logits


@pytest.mark.slow
@pytest.mark.ray
def test_sweep_trials_and_run_students_train_on_the_same_topk_targets(
    topk_prepared: tuple[Job, Prepared],
) -> None:
    """What a ``raykd run`` student reads, a shared-mode trial and a naive trial: one top-k."""
    import ray

    job, prepared = topk_prepared
    method, n = job.spec.methods[0], len(prepared.data.train)
    run = ray.get(student_refs(method, prepared.teachers, prepared.refs)["teacher_train"])
    run = assert_topk(run, teachers=2, rows=n)

    plan = plan_resources(job.spec, cluster_cpus=2, cluster_gpus=0, use_gpu=False)
    shared = shared_inputs(
        job, prepared.data, prepared.refs, prepared.teachers, plan, use_gpu=False
    )
    x_train = ray.get(shared["x_train"])
    trial, cost = teacher_logits(shared, method, x_train)
    for got, want in zip(assert_topk(trial, teachers=2, rows=n), run, strict=True):
        np.testing.assert_array_equal(got, want)
    assert cost["teacher_forward_examples"] == 0

    # naive mode: each trial runs the same teachers (from their checkpoints) itself
    raw = job.spec.model_dump(mode="json")
    for t, checkpoint in zip(raw["teachers"], prepared.teachers.checkpoints, strict=True):
        t["checkpoint"] = checkpoint
    naive_job = Job(spec=parse_spec(raw), job_dir=job.job_dir, log=job.log)
    shared = shared_inputs(naive_job, prepared.data, prepared.refs, None, plan, use_gpu=False)
    naive, cost = teacher_logits(shared, method, x_train)
    assert cost["teacher_forward_examples"] == 2 * n
    np.testing.assert_allclose(
        dense(assert_topk(naive, teachers=2, rows=n)), dense(run), rtol=1e-5, atol=1e-5
    )
