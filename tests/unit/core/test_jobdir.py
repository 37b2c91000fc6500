"""Job directories (raykd.core.jobdir): one directory per run, published files atomic, every
spec path absolute (issue 8: defects that made a result silently wrong)."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
import yaml

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
from tests.helpers.cli import cli_exit, one_line_error
from tests.helpers.specs import digits_spec

# --- 1. one job directory, one run ---------------------------------------------------------


def test_a_used_job_dir_is_refused_before_any_work(tmp_path: Path) -> None:
    old = tmp_path / "job"
    (old / "students").mkdir(parents=True)
    (old / "result.json").write_text("{}")  # an earlier run's files
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(digits_spec(str(tmp_path))))
    line = one_line_error(*cli_exit("run", str(spec), "--job-dir", str(old)))
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
    assert "cannot create job directory" in one_line_error(*cli_exit("run", str(spec)))


def test_a_job_dir_that_is_a_file_or_cannot_exist_is_one_error_line(tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(digits_spec(str(tmp_path))))
    a_file = tmp_path / "file"
    a_file.write_text("x")
    assert "is a file" in one_line_error(*cli_exit("run", str(spec), "--job-dir", str(a_file)))
    below_file = a_file / "job"
    assert "cannot create job directory" in one_line_error(*cli_exit("run", str(spec), "--job-dir", str(below_file)))
    line = one_line_error(*cli_exit("run", str(spec), "--set", f"storage={a_file / 'runs'}"))
    assert "cannot create job directory" in line
























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
