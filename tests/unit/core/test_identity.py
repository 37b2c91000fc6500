"""A job's identity, states and sweep directory each have one home (raykd.core.jobdir,
raykd.core.states): the rules hold there, and no other module spells them out again."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path
from typing import get_args

import pytest

from raykd.core.job_id import JOB_ID, JobIdError, check_job_id, new_job_id
from raykd.core.jobdir import spec_hash
from raykd.core.spec import parse_spec
from raykd.core.states import (
    ACTIVE_STATES,
    FINAL_STATES,
    SLOT_STATES,
    STATES,
    SUBMIT_STATES,
    TERMINAL_EVENTS,
    UNFINISHED_STATES,
    EventState,
)
from tests.helpers.imports import heavy_imports
from tests.helpers.paths import PACKAGE
from tests.helpers.specs import digits_spec


@pytest.mark.parametrize("name", ["exp", "_exp", "-x", ".hidden", "", "a" * 64])
def test_a_generated_id_is_valid_unique_and_named_after_the_job(name: str) -> None:
    ids = {new_job_id(name) for _ in range(20)}
    assert len(ids) == 20
    for job_id in ids:
        assert check_job_id(job_id) == job_id
        assert job_id.startswith((name.lstrip("_.-") or "job") + "-")


@pytest.mark.parametrize("bad", ["", "_x", ".service", "a/b", "..", "x" * 129, "é"])
def test_an_invalid_id_is_refused_naming_the_field_and_the_rule(bad: str) -> None:
    with pytest.raises(JobIdError, match=r"^job_id .* is not a valid job id: use 1-128 letters"):
        check_job_id(bad, field="job_id")


@pytest.mark.parametrize("reserved", ["cache", "raykd.db-wal", "x-sweep-0123abcd",
                                      "x-20260101-120000-abc123"])
def test_ids_the_storage_layout_uses_are_reserved_for_clients_only(reserved: str) -> None:
    assert check_job_id(reserved) == reserved  # the driver may use them (it made them)
    with pytest.raises(JobIdError, match="is reserved"):
        check_job_id(reserved, reserved=True)


def test_the_spec_hash_is_the_same_for_a_spec_and_its_json(tmp_path: Path) -> None:
    import json

    spec = parse_spec(digits_spec(str(tmp_path)))
    data = json.loads(spec.model_dump_json())
    assert spec_hash(spec) == spec_hash(data) == spec_hash(dict(reversed(data.items())))
    assert spec_hash(spec) != spec_hash(spec.model_copy(update={"name": "other"}))
    assert re.fullmatch(r"[0-9a-f]{16}", spec_hash(spec))


def test_a_sweep_directory_is_named_by_the_spec_hash_and_an_older_one_is_kept(
        tmp_path: Path) -> None:
    from raykd.core.jobdir import resolve_spec_paths
    from raykd.tune.driver import _legacy_digest, default_job_dir

    spec = resolve_spec_paths(parse_spec(digits_spec(str(tmp_path))))
    fresh = default_job_dir(spec)
    assert fresh == tmp_path / f"{spec.name}-sweep-{spec_hash(spec)[:8]}"
    assert JOB_ID.match(fresh.name)
    legacy = tmp_path / f"{spec.name}-sweep-{_legacy_digest(spec)}"
    legacy.mkdir()
    assert default_job_dir(spec) == fresh  # an empty folder is no sweep of this spec
    (legacy / "spec.json").write_text(spec.model_dump_json())
    assert default_job_dir(spec) == legacy  # the older sweep resumes where it is
    fresh.mkdir()
    assert default_job_dir(spec) == fresh


def test_the_state_sets_are_the_states_a_user_sees() -> None:
    """The names the API, the CLI and the dashboard show, in the order of a job's life."""
    assert STATES == ("queued", "submitting", "pending", "running", "succeeded", "failed",
                      "cancelled", "timed_out")
    assert FINAL_STATES == ("succeeded", "failed", "cancelled", "timed_out")
    assert UNFINISHED_STATES == ("queued", "submitting", "pending", "running")
    assert ACTIVE_STATES == ("pending", "running")
    assert SUBMIT_STATES == ("queued", "submitting")
    assert SLOT_STATES == ("submitting", "pending", "running")
    assert get_args(EventState) == ("pending", "running", "succeeded", "failed", "cancelled")
    assert TERMINAL_EVENTS == ("job_finished", "job_failed")


def test_the_core_modules_import_neither_torch_ray_nor_numpy() -> None:
    """raykd.core is the torch-free floor: every module in it (found, not listed) imports
    without torch, Ray or numpy, as the client and the control plane rely on."""
    code = textwrap.dedent("""
        import importlib, pkgutil
        import raykd.core
        names = [m.name for m in pkgutil.iter_modules(raykd.core.__path__, "raykd.core.")]
        for name in names:
            importlib.import_module(name)
        assert len(names) >= 10, "raykd.core's modules were not found"
    """)
    heavy = heavy_imports(code, ("torch", "ray", "numpy"))
    assert heavy == [], f"raykd.core loads {heavy}"


def _spelled_out(pattern: str, *, suffixes: tuple[str, ...] = (".py", ".js", ".html")) -> list[str]:
    found = []
    for path in sorted(PACKAGE.rglob("*")):
        # the homes: states, the job directory (spec hash, layout) and job ids
        if path.suffix in suffixes and path.name not in ("states.py", "jobdir.py", "job_id.py"):
            if re.search(pattern, path.read_text(encoding="utf-8")):
                found.append(str(path.relative_to(PACKAGE)))
    return found


def test_no_module_but_raykd_states_lists_the_final_states() -> None:
    assert _spelled_out(r"""["']succeeded["'],\s*["']failed["'],\s*["']cancelled["']""") == []
    assert _spelled_out(r"""["']pending["'],\s*["']running["']""") == []
    assert _spelled_out(r"""["']queued["'],\s*["']submitting["']""") == []
    assert _spelled_out(r"""[(\[]["']job_finished["'],\s*["']job_failed["'][)\]]""") == []


def test_no_module_but_raykd_job_id_spells_the_job_id_rule_or_jobdir_hashes_a_spec() -> None:
    assert _spelled_out(re.escape("[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")) == []
    assert _spelled_out(r"sha256\(spec\.model_dump_json|def spec_hash|def _new_id") == [
        "tune/driver.py"]  # _legacy_digest: finds raykd 0.1.0's sweep folders, names none


def test_a_job_directory_is_named_by_its_checked_id(tmp_path: Path) -> None:
    from raykd.core.jobdir import StorageLayout

    storage = StorageLayout(tmp_path)
    job = storage.job("exp-1")
    assert job.root == tmp_path / "exp-1"
    assert (job.spec, job.events, job.result) == (tmp_path / "exp-1" / "spec.json",
                                                  tmp_path / "exp-1" / "events.jsonl",
                                                  tmp_path / "exp-1" / "result.json")
    assert job.student_record(0, 2) == tmp_path / "exp-1" / "students" / "student-0-g2.json"
    for bad in ("../escape", "/abs", ".service", "a/b"):
        with pytest.raises(JobIdError, match="not a valid job id"):
            storage.job(bad)
    with pytest.raises(JobIdError):
        storage.submitted_spec("../../token")


def test_no_module_but_raykd_jobdir_names_the_files_of_a_job_directory() -> None:
    names = ("spec.json", "events.jsonl", "result.json", "sweep.json", "driver.lock",
             "data.json", "preprocessing.json", "trials.csv", "best_student.safetensors")
    literal = "|".join(re.escape(f'"{n}"') for n in names)
    folders = (r'(job_dir|storage|row\.id|job_id)\)? / "(students|teachers|tune|tune_train|logits|'
               r'student_states|ray_train|cache|\.service)"')
    assert _spelled_out(f"{literal}|{folders}", suffixes=(".py",)) == []
