"""Bad input gets one line naming the field, the value and what is accepted, and exit code 2.

Everything here fails before Ray starts, so these run in a second or two each.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from raykd.cli import app
from raykd.core.spec import MAX_SEED
from tests.helpers.checkpoints import model_checkpoint
from tests.helpers.cli import cli_exit, one_line_error
from tests.helpers.specs import digits_spec


def run_cli(tmp_path: Path, spec: dict[str, Any], command: str = "run") -> tuple[int, str]:
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return cli_exit(command, path)




def with_method(tmp_path: Path, **fields: Any) -> dict[str, Any]:
    return digits_spec(str(tmp_path), methods=[{"method": "wkd", **fields}])


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"incorrect_weight": 1.5},
         r"methods\.0\.incorrect_weight: .*less than or equal to 1.*1\.5"),
        ({"incorrect_weight": 0}, r"methods\.0\.incorrect_weight: .*greater than 0"),
        ({"temperature": 0}, r"methods\.0\.temperature: .*greater than 0"),
        ({"temperature": -2}, r"methods\.0\.temperature"),
        ({"alpha": 1.2}, r"methods\.0\.alpha: .*less than or equal to 1.*1\.2"),
        ({"alpha": -0.1}, r"methods\.0\.alpha: .*greater than or equal to 0"),
        ({"method": "distill"},
         r"methods\.0\.method: .*'none', 'kd', 'wkd' or 'annealing'.*distill"),
    ],
)
def test_hyperparameters_out_of_range(tmp_path: Path, fields: dict, expected: str) -> None:
    line = one_line_error(*run_cli(tmp_path, with_method(tmp_path, **fields), "validate"))
    assert pytest.importorskip("re").search(expected, line), line


def test_unknown_key(tmp_path: Path) -> None:
    spec = digits_spec(str(tmp_path), learning_rate=0.1)
    line = one_line_error(*run_cli(tmp_path, spec, "validate"))
    assert "learning_rate: Extra inputs are not permitted" in line


def test_unknown_model(tmp_path: Path) -> None:
    spec = digits_spec(str(tmp_path), student={"model": {"name": "resnet50"}})
    line = one_line_error(*run_cli(tmp_path, spec, "validate"))
    assert "student.model.name" in line and "'resnet50'" in line and "mlp" in line


def test_teachers_and_student_disagree_on_classes(tmp_path: Path) -> None:
    spec = digits_spec(str(tmp_path), student={"model": {"name": "mlp", "num_classes": 5}})
    spec["teachers"][0]["model"]["num_classes"] = 10
    line = one_line_error(*run_cli(tmp_path, spec, "validate"))
    assert "disagree on the number of classes" in line and "student.model.num_classes=5" in line


def test_declared_classes_disagree_with_the_data(tmp_path: Path) -> None:
    spec = digits_spec(str(tmp_path), student={"model": {"name": "mlp", "num_classes": 5}})
    line = one_line_error(*run_cli(tmp_path, spec))
    assert "student.model.num_classes=5" in line and "10 classes" in line


def test_unknown_dataset(tmp_path: Path) -> None:
    spec = digits_spec(str(tmp_path), data={"dataset": "cifar10"})
    line = one_line_error(*run_cli(tmp_path, spec))
    assert "'cifar10'" in line and "mnist" in line and ".npz" in line


def test_missing_data_file(tmp_path: Path) -> None:
    spec = digits_spec(str(tmp_path), data={"dataset": str(tmp_path / "nope.npz")})
    line = one_line_error(*run_cli(tmp_path, spec))
    assert "nope.npz" in line


def test_corrupt_data_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"garbage")
    spec = digits_spec(str(tmp_path), data={"dataset": str(bad)})
    line = one_line_error(*run_cli(tmp_path, spec))
    assert "bad.npz" in line


def test_labels_out_of_range(tmp_path: Path) -> None:
    path = tmp_path / "neg.npz"
    np.savez(path, x=np.random.rand(50, 4).astype(np.float32), y=np.array([-1] + [0, 1] * 24 + [1]))
    spec = digits_spec(str(tmp_path), data={"dataset": str(path)})
    line = one_line_error(*run_cli(tmp_path, spec))
    assert "label" in line and "-1" in line


def test_teacher_checkpoint_with_fewer_classes_than_the_labels(tmp_path: Path) -> None:
    config = {"name": "mlp", "hidden": [32]}
    ckpt = model_checkpoint(tmp_path / "t5.safetensors", config, (1, 8, 8), 5)
    spec = digits_spec(str(tmp_path))
    spec["teachers"][0]["checkpoint"] = str(ckpt)
    line = one_line_error(*run_cli(tmp_path, spec))
    assert "t5.safetensors" in line and "5 classes" in line and "10" in line


@pytest.mark.parametrize("content", [None, b"\x00\x01corrupt"])
def test_missing_or_corrupt_checkpoint(tmp_path: Path, content: bytes | None) -> None:
    ckpt = tmp_path / "teacher.safetensors"
    if content is not None:
        ckpt.write_bytes(content)
    spec = digits_spec(str(tmp_path))
    spec["teachers"][1]["checkpoint"] = str(ckpt)
    line = one_line_error(*run_cli(tmp_path, spec))
    assert "teacher.safetensors" in line
    assert ("does not exist" if content is None else "not a readable safetensors") in line


def test_not_yaml_and_not_a_mapping(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("name: [unclosed")
    (tmp_path / "b.yaml").write_text("- just\n- a list\n")
    for name, expected in (("a.yaml", "not valid YAML"), ("b.yaml", "a spec is a mapping")):
        result = CliRunner().invoke(app, ["validate", str(tmp_path / name)])
        assert expected in one_line_error(result.exit_code, result.output)
    result = CliRunner().invoke(app, ["run", "no-such-example"])
    assert "bundled example" in one_line_error(result.exit_code, result.output)


def test_real_console_script_exit_code(tmp_path: Path) -> None:
    """The installed entry point, as `ray job submit -- raykd run` calls it."""
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(with_method(tmp_path, incorrect_weight=2)))
    proc = subprocess.run([sys.executable, "-m", "raykd", "run", str(path)], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().startswith("error: invalid spec: methods.0.incorrect_weight")
    assert "Traceback" not in proc.stderr


# --- issue 8: errors that reached the user as a stack trace, or named nothing -------------




def test_set_value_that_is_not_yaml() -> None:
    line = one_line_error(*cli_exit("run", "digits-quick", "--set", "name=[x"))
    assert "--set 'name=[x'" in line and "not valid YAML" in line and "accepted" in line


@pytest.mark.parametrize(("value", "why"), [
    ("[&a x, *a]", "anchors and aliases"),
    (".nan", "values JSON cannot carry"),
    ("2026-12-07", "values JSON cannot carry"),
])
def test_set_values_follow_the_spec_files_rules(value: str, why: str) -> None:
    """A ``--set`` value is read by the spec reader's rules: what a spec file may not hold,
    an override may not either (they used to pass yaml.safe_load as they were)."""
    line = one_line_error(*cli_exit("validate", "digits-quick", "--set", f"name={value}"))
    assert f"--set 'name={value}'" in line and why in line and "accepted" in line


def test_seed_beyond_the_bound_names_the_field_and_the_bound() -> None:
    too_big = "99999999999999999999"
    line = one_line_error(*cli_exit("run", "digits-quick", "--set", f"train.seed={too_big}"))
    assert "train.seed" in line and str(MAX_SEED) in line and "99999999999999999999" in line


def test_spec_that_is_a_directory(tmp_path: Path) -> None:
    line = one_line_error(*cli_exit("run", str(tmp_path)))
    assert str(tmp_path) in line and "is a directory" in line


def test_spec_that_is_not_utf8_text(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes("name: caf\u00e9\n".encode("latin-1"))
    line = one_line_error(*cli_exit("validate", str(path)))
    assert "latin1.yaml" in line and "not UTF-8" in line and "0xe9" in line


def deny_reading(monkeypatch: pytest.MonkeyPatch, denied: Path, method: str) -> None:
    """``Path.<method>`` of ``denied`` fails as for an unreadable file (root can read any file)."""
    real = getattr(Path, method)

    def guarded_call(self: Path, *args: Any, **kwargs: Any) -> Any:
        if self == denied:
            raise PermissionError(13, "Permission denied", str(self))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Path, method, guarded_call)


def test_spec_that_cannot_be_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "secret.yaml"
    path.write_text(yaml.safe_dump(digits_spec(str(tmp_path))))
    if os.geteuid() == 0:
        deny_reading(monkeypatch, path, "read_text")
    else:
        path.chmod(0)
    line = one_line_error(*cli_exit("validate", str(path)))
    assert "secret.yaml" in line and "cannot be read" in line and "Permission denied" in line


def unreadable_data_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str) -> Path:
    """A data file that cannot be read: a directory, a denied file, or garbage bytes."""
    path = tmp_path / f"data.{'npz' if kind in ('directory', 'permission') else kind}"
    if kind == "directory":
        path.mkdir()
        return path
    if kind != "permission":
        path.write_bytes(b"\xff\xfe\x00garbage")
        return path
    np.savez(path, x=np.ones((20, 3)), y=np.arange(20) % 2)
    # data files are opened with os.open (raykd.data.paths checks the opened file)
    if os.geteuid() == 0:
        real_open = os.open

        def denied_open(file: Any, flags: int, *args: Any, **kwargs: Any) -> int:
            if os.fspath(file) == str(path):
                raise PermissionError(13, "Permission denied", str(path))
            return real_open(file, flags, *args, **kwargs)

        monkeypatch.setattr(os, "open", denied_open)
    else:
        path.chmod(0)
    return path


@pytest.mark.parametrize(
    ("kind", "expected"),
    [("directory", "is not a regular file"), ("permission", "Permission denied"),
     ("csv", "as .csv: UnicodeDecodeError"), ("parquet", "as .parquet:")],
)
def test_unreadable_data_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str,
                              expected: str) -> None:
    path = unreadable_data_file(tmp_path, monkeypatch, kind)
    spec = digits_spec(str(tmp_path), data={"dataset": str(path)})
    line = one_line_error(*run_cli(tmp_path, spec))
    assert repr(str(path)) in line and expected in line


def checkpoint_with_meta(tmp_path: Path, **meta: str) -> Path:
    """A teacher checkpoint for the digits spec whose metadata entries ``meta`` are replaced."""
    from safetensors.torch import save_file

    config = {"name": "mlp", "hidden": [32]}
    path = model_checkpoint(tmp_path / "t.safetensors", config, (1, 8, 8), 10)
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        stored = {**(f.metadata() or {}), **meta}
        state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open has no __iter__
    save_file(state, str(path), metadata=stored)
    return path


@pytest.mark.parametrize(
    ("meta", "expected"),
    [({"raykd_model": "[1, 2]"}, "'raykd_model' is the JSON list [1, 2]"),
     ({"raykd_model": "7"}, "'raykd_model' is the JSON number 7"),
     ({"input_shape": '"1x8x8"'}, "'input_shape' is the JSON string \"1x8x8\""),
     ({"num_classes": "[10]"}, "'num_classes' is the JSON list [10]"),
     ({"raykd_model": "{not json"}, "'raykd_model' is not JSON")],
)
def test_checkpoint_metadata_of_the_wrong_type(tmp_path: Path, meta: dict[str, str],
                                               expected: str) -> None:
    spec = digits_spec(str(tmp_path))
    spec["teachers"][0]["checkpoint"] = str(checkpoint_with_meta(tmp_path, **meta))
    line = one_line_error(*run_cli(tmp_path, spec))
    assert "t.safetensors" in line and expected in line and "expected" in line


def test_bench_sweep_without_a_sweep_section_fails_before_any_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import raykd.bench.sweep as bench

    def no_work(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the bench started working on a spec it cannot sweep")

    monkeypatch.setattr(bench, "trained_teachers", no_work)
    monkeypatch.setattr(bench, "ensure_ray", no_work)
    out = tmp_path / "bench"
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(digits_spec(str(tmp_path))))
    start = time.perf_counter()
    line = one_line_error(*cli_exit("bench", "sweep", str(path), "--out", str(out)))
    assert "no sweep: section" in line and time.perf_counter() - start < 30
    assert not out.exists()


def test_internal_value_error_is_a_bug_with_a_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import raykd.engine.data_stage

    def broken(*args: Any, **kwargs: Any) -> None:
        raise ValueError("boom")

    monkeypatch.setattr(raykd.engine.data_stage, "load_dataset", broken)
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(digits_spec(str(tmp_path))))
    result = CliRunner().invoke(app, ["run", str(path)])
    assert result.exit_code == 1, result.output
    assert "Traceback" in result.output and "ValueError: boom" in result.output
    assert not any(line.startswith("error:") for line in result.output.splitlines())


@pytest.mark.parametrize(
    ("args", "expected"),
    [(["speed", "--steps", "0"], "--steps=0 is invalid; expected an integer >= 1"),
     (["quality", "--quick", "--seeds", "-1"], "--seeds=-1 is invalid; expected an integer >= 1")],
)
def test_bench_options_out_of_range(tmp_path: Path, args: list[str], expected: str) -> None:
    out = tmp_path / "bench"
    line = one_line_error(*cli_exit("bench", *args, "--out", str(out)))
    assert expected in line and not out.exists()


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", '{"rows": {}}'])
def test_speed_rerun_into_a_broken_report(tmp_path: Path, content: str) -> None:
    from raykd.bench import BenchOptionError
    from raykd.bench.speed import _rows_to_run, plan_steps

    (tmp_path / "speed.json").write_text(content)
    with pytest.raises(BenchOptionError, match=r"--rows=a,b: .*speed\.json.*rerun the whole bench"):
        _rows_to_run(("a", "b"), tmp_path, plan_steps(quick=True, steps=None))


def test_a_bug_raised_while_handling_a_user_error_stays_a_bug() -> None:
    from raykd.core.errors import SpecError, user_message

    try:
        try:
            raise SpecError("train.epochs=0: must be >= 1")
        except SpecError:
            raise KeyError("bug in the error path")  # noqa: B904 - implicit chaining on purpose
    except KeyError as bug:
        assert user_message(bug) is None  # a bug: shown with its traceback
    try:
        raise RuntimeError("Ray wrapped it") from SpecError("data.dataset='x': unknown")
    except RuntimeError as wrapped:
        assert user_message(wrapped) == "data.dataset='x': unknown"  # explicit links still count


def test_a_spec_file_is_read_by_the_dashboards_rules(tmp_path: Path) -> None:
    """One YAML reader: anchors, values JSON cannot carry and empty files fail in one line."""
    cases = {"anchors.yaml": ("name: &n x\nstorage: *n\n", "anchors.yaml: anchors and aliases"),
             "merge.yaml": ("data: &d {seed: 0}\nteacher_train: {<<: *d}\n",
                            "merge.yaml: anchors and aliases"),
             "empty.yaml": ("\n", "the spec is empty"),
             "date.yaml": ("name: 2026-12-07\n", "values JSON cannot carry")}
    for name, (text, expected) in cases.items():
        (tmp_path / name).write_text(text)
        result = CliRunner().invoke(app, ["validate", str(tmp_path / name)])
        line = one_line_error(result.exit_code, result.output)
        assert expected in line and name in line, line
