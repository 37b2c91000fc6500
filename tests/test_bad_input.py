"""Bad input gets one line naming the field, the value and what is accepted, and exit code 2.

Everything here fails before Ray starts, so these run in a second or two each.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from raykd.cli import app
from raykd.models import build_model, save_checkpoint
from tests.conftest import digits_spec


def run_cli(tmp_path: Path, spec: dict[str, Any], command: str = "run") -> tuple[int, str]:
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    result = CliRunner().invoke(app, [command, str(path)])
    return result.exit_code, result.output


def one_line_error(code: int, output: str) -> str:
    assert code == 2, output
    assert "Traceback" not in output
    lines = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, output
    return lines[0]


def with_method(tmp_path: Path, **fields: Any) -> dict[str, Any]:
    return digits_spec(str(tmp_path), methods=[{"method": "wkd", **fields}])


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"incorrect_weight": 1.5}, r"methods\.0\.incorrect_weight: .*less than or equal to 1.*1\.5"),
        ({"incorrect_weight": 0}, r"methods\.0\.incorrect_weight: .*greater than 0"),
        ({"temperature": 0}, r"methods\.0\.temperature: .*greater than 0"),
        ({"temperature": -2}, r"methods\.0\.temperature"),
        ({"alpha": 1.2}, r"methods\.0\.alpha: .*less than or equal to 1.*1\.2"),
        ({"alpha": -0.1}, r"methods\.0\.alpha: .*greater than or equal to 0"),
        ({"method": "distill"}, r"methods\.0\.method: .*'none', 'kd', 'wkd' or 'annealing'.*distill"),
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
    ckpt = save_checkpoint(build_model(config, (1, 8, 8), 5), tmp_path / "t5.safetensors", config=config,
                           input_shape=(1, 8, 8), num_classes=5)
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
    for name, expected in (("a.yaml", "not valid YAML"), ("b.yaml", "a spec is a YAML mapping")):
        result = CliRunner().invoke(app, ["validate", str(tmp_path / name)])
        assert expected in one_line_error(result.exit_code, result.output)
    result = CliRunner().invoke(app, ["run", "no-such-example"])
    assert "bundled example" in one_line_error(result.exit_code, result.output)


def test_real_console_script_exit_code(tmp_path: Path) -> None:
    """The installed entry point, as `ray job submit -- raykd run` calls it."""
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(with_method(tmp_path, incorrect_weight=2)))
    proc = subprocess.run([sys.executable, "-m", "raykd", "run", str(path)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().startswith("error: invalid spec: methods.0.incorrect_weight")
    assert "Traceback" not in proc.stderr
