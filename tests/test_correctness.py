"""Defects that made a result silently wrong (issue 8), each pinned by a test.

Job directories belong to one run; paths handed to actors are absolute; shared files are
published atomically; the top-k form flows through the disk cache and the sweep alike;
the spec's defaults are the documented ones.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from raykd.cli import app
from raykd.core.errors import JobDirError
from raykd.core.jobdir import (
    BUILTIN_DATASETS,
    claim_job_dir,
    new_job_dir,
    publish_file,
    resolve_spec_paths,
)
from raykd.core.spec import parse_spec
from raykd.data import DATASETS, TEXT_DATASETS
from raykd.data.span_data import SPAN_DATASETS
from raykd.engine.context import Job
from raykd.engine.prepare import Prepared, prepare
from raykd.engine.students import generation_seed, student_refs
from raykd.losses.topk import TopK, concat_rows, dense, to_topk
from raykd.teachers.cache import LogitCache, cache_key
from raykd.tune.driver import shared_inputs
from raykd.tune.space import plan_resources
from raykd.tune.trial import teacher_logits
from tests.conftest import digits_spec


def cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.output


def error_line(code: int, output: str) -> str:
    assert code == 2, output
    assert "Traceback" not in output, output
    (line,) = [x for x in output.splitlines() if x.startswith("error:")]
    return line


# --- 1. one job directory, one run ---------------------------------------------------------


def test_a_used_job_dir_is_refused_before_any_work(tmp_path: Path) -> None:
    old = tmp_path / "job"
    (old / "students").mkdir(parents=True)
    (old / "result.json").write_text("{}")  # an earlier run's files
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(digits_spec(str(tmp_path))))
    line = error_line(*cli("run", str(spec), "--job-dir", str(old)))
    assert "already holds another run's files" in line and str(old) in line
    assert not (old / "spec.json").exists()


def test_generated_job_dirs_never_repeat_within_a_second(tmp_path: Path) -> None:
    dirs = {new_job_dir(tmp_path, "same-name") for _ in range(50)}
    assert len(dirs) == 50 and all(d.is_absolute() for d in dirs)


def test_two_runs_racing_for_one_dir_get_it_once(tmp_path: Path) -> None:
    target, wins, errors = tmp_path / "race", [], []

    def claim(i: int) -> None:
        try:
            wins.append(claim_job_dir(target, f'{{"run": {i}}}'))
        except JobDirError as err:
            errors.append(str(err))

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1 and len(errors) == 7


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_an_unwritable_storage_is_one_error_line(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(digits_spec(str(locked / "runs"))))
    assert "cannot create job directory" in error_line(*cli("run", str(spec)))


def test_a_job_dir_that_is_a_file_or_cannot_exist_is_one_error_line(tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(digits_spec(str(tmp_path))))
    a_file = tmp_path / "file"
    a_file.write_text("x")
    assert "is a file" in error_line(*cli("run", str(spec), "--job-dir", str(a_file)))
    below_file = a_file / "job"
    assert "cannot create job directory" in error_line(*cli("run", str(spec), "--job-dir", str(below_file)))
    line = error_line(*cli("run", str(spec), "--set", f"storage={a_file / 'runs'}"))
    assert "cannot create job directory" in line


# --- 2-5. spec defaults --------------------------------------------------------------------


def test_born_again_generations_get_their_own_seeds() -> None:
    seeds = [generation_seed(7, g) for g in (1, 2, 3)]
    assert seeds[0] == 7 and len(set(seeds)) == 3
    assert seeds == [generation_seed(7, g) for g in (1, 2, 3)]  # derived, reproducible
    assert generation_seed(8, 2) != seeds[1]


def test_annealing_targets_the_plain_softmax_by_default(tmp_path: Path) -> None:
    spec = parse_spec(digits_spec(str(tmp_path), methods=[
        {"method": "annealing"}, {"method": "kd"}, {"method": "annealing", "temperature": 3.0}]))
    assert [m.temperature for m in spec.methods] == [1.0, 4.0, 3.0]


def test_val_fraction_zero_is_refused(tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(digits_spec(str(tmp_path))))
    line = error_line(*cli("validate", str(spec), "--set", "data.val_fraction=0"))
    assert "data.val_fraction" in line and "greater than 0" in line


def test_teacher_train_has_no_second_seed(tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(digits_spec(str(tmp_path))))
    line = error_line(*cli("validate", str(spec), "--set", "teacher_train.seed=5"))
    assert "teacher_train.seed" in line and "Extra inputs are not permitted" in line


# --- 6. top-k in every place ---------------------------------------------------------------


def test_topk_entries_round_trip_through_the_disk_cache(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    z = rng.normal(size=(50, 10)).astype(np.float32)
    sparse = to_topk(z, 3)
    cache = LogitCache(tmp_path)
    key = cache_key(weights="w", model="m", fingerprint="f", split="train", topk=3)
    assert key != cache_key(weights="w", model="m", fingerprint="f", split="train")  # dense and top-k never mix
    cache.put(key, sparse)
    got = cache.get(key)
    assert isinstance(got, TopK) and got.num_classes == 10
    for a, b in zip(got, sparse, strict=True):
        np.testing.assert_array_equal(a, b)
    assert list(tmp_path.glob("*.npz")) and not list(tmp_path.glob("*.npy"))
    both = concat_rows(TopK(*[np.stack([f, f]) for f in sparse[:3]], 10), TopK(*[np.stack([f, f]) for f in sparse[:3]], 10))
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
    line = error_line(*cli("run", str(spec), "--set", "cache.topk=10"))
    assert "cache.topk=10 must be below the number of classes (10)" in line


TOPK = 3


@pytest.fixture(scope="module")
def topk_prepared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Job, Prepared]]:
    """A real job prefix (2 small teachers trained on digits) of a spec with ``cache.topk: 3``."""
    import ray

    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    root = tmp_path_factory.mktemp("topk")
    spec = resolve_spec_paths(parse_spec(digits_spec(
        str(root), cache={"topk": TOPK}, methods=[{"method": "wkd"}],
        teachers=[{"model": {"name": "mlp", "hidden": [16]}, "seed": s} for s in (1, 2)],
        teacher_train={"epochs": 1, "batch_size": 64, "lr": 0.003},
        sweep={"searcher": "grid", "temperature": {"values": [2.0, 4.0]}})))
    job = Job(spec=spec, job_dir=root / "job", log=lambda _: None)
    try:
        yield job, prepare(job)
    finally:
        ray.shutdown()


def assert_topk(logits: object, *, teachers: int, rows: int) -> TopK:
    assert isinstance(logits, TopK), f"dense logits {type(logits).__name__} where cache.topk={TOPK}"
    assert logits.values.shape == logits.indices.shape == (teachers, rows, TOPK)
    assert logits.rest_lse.shape == (teachers, rows) and logits.num_classes == 10
    return logits


@pytest.mark.ray
def test_sweep_trials_and_run_students_train_on_the_same_topk_targets(
        topk_prepared: tuple[Job, Prepared]) -> None:
    """What a ``raykd run`` student reads, a shared-mode trial and a naive trial: one top-k."""
    import ray

    job, prepared = topk_prepared
    method, n = job.spec.methods[0], len(prepared.data.train)
    run = ray.get(student_refs(method, prepared.teachers, prepared.refs)["teacher_train"])
    run = assert_topk(run, teachers=2, rows=n)

    plan = plan_resources(job.spec, cluster_cpus=2, cluster_gpus=0, use_gpu=False)
    shared = shared_inputs(job, prepared.data, prepared.refs, prepared.teachers, plan, use_gpu=False)
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
    np.testing.assert_allclose(dense(assert_topk(naive, teachers=2, rows=n)), dense(run),
                               rtol=1e-5, atol=1e-5)


# --- 8. atomic publishing ------------------------------------------------------------------


def test_a_reader_never_sees_a_partial_published_file(tmp_path: Path) -> None:
    src = tmp_path / "big.bin"
    payload = os.urandom(1 << 23)
    src.write_bytes(payload)
    dst = tmp_path / "cache" / "teacher.safetensors"
    sizes: list[int] = []
    done = threading.Event()

    def read() -> None:
        while not done.is_set():
            if dst.exists():
                sizes.append(len(dst.read_bytes()))

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for _ in range(5):
            publish_file(src, dst)
    finally:
        done.set()
        reader.join()
    assert dst.read_bytes() == payload
    assert set(sizes) <= {len(payload)}
    assert [p.name for p in dst.parent.iterdir()] == ["teacher.safetensors"]  # no temp left


# --- 9. absolute paths ---------------------------------------------------------------------


def test_every_spec_path_is_made_absolute(tmp_path: Path) -> None:
    raw = digits_spec("runs")
    raw["teachers"][0]["checkpoint"] = "ckpt/t0.safetensors"
    raw["cache"] = {"dir": "shared-cache"}
    raw["data"] = {"dataset": "data/table.csv"}
    spec = resolve_spec_paths(parse_spec(raw), base=tmp_path)
    assert spec.storage == str(tmp_path / "runs")
    assert spec.cache.dir == str(tmp_path / "shared-cache")
    assert spec.data.dataset == str(tmp_path / "data/table.csv")
    assert spec.teachers[0].checkpoint == str(tmp_path / "ckpt/t0.safetensors")
    assert spec.teachers[1].checkpoint is None
    builtin = resolve_spec_paths(parse_spec(digits_spec("runs")), base=tmp_path)
    assert builtin.data.dataset == "digits"
    assert set(BUILTIN_DATASETS) == set(DATASETS) | set(TEXT_DATASETS) | set(SPAN_DATASETS)
