"""The user's own ``nn.Module`` as teacher or student: importable only from the allowlist
``RAYKD_MODEL_ALLOWLIST``; a path outside it is refused before anything runs (and nothing
is imported); the output shape is checked on one batch; checkpoints round-trip through
safetensors (and ``.pt`` via ``torch.load(weights_only=True)``) with mismatches named by
layer; a user module teaches beside a registry CNN on an image folder on a real local Ray."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from raykd.core.allowlist import ALLOWLIST_ENV, is_allowed
from tests.helpers.data import digit_folder

PACKAGE = "raykd_user_nets"
NETS = textwrap.dedent('''
    import math

    from torch import nn


    class TinyNet(nn.Module):
        """The contract: input_shape and num_classes from raykd, hidden from the spec."""

        def __init__(self, *, input_shape, num_classes, hidden=16):
            super().__init__()
            self.net = nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), hidden),
                                     nn.ReLU(), nn.Linear(hidden, num_classes))

        def forward(self, x):
            return self.net(x)


    def small_net(input_shape, num_classes, hidden=8):
        return TinyNet(input_shape=input_shape, num_classes=num_classes, hidden=hidden)


    class OneTooMany(TinyNet):
        def __init__(self, *, input_shape, num_classes):
            super().__init__(input_shape=input_shape, num_classes=num_classes + 1)
''')
EVIL = "import pathlib\npathlib.Path(__file__).with_name('IMPORTED').write_text('yes')\n"


@pytest.fixture(scope="module", autouse=True)
def user_code(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A folder with package ``raykd_user_nets`` (allowed) and module ``raykd_not_allowed``
    (which would leave a file IMPORTED if it were ever imported), on ``sys.path`` only: the
    local Ray's workers must get it from raykd, as a user's would."""
    root = tmp_path_factory.mktemp("user_code")
    (root / PACKAGE).mkdir()
    (root / PACKAGE / "__init__.py").write_text("")
    (root / PACKAGE / "nets.py").write_text(NETS)
    (root / "raykd_not_allowed.py").write_text(EVIL)
    before = os.environ.get(ALLOWLIST_ENV)
    sys.path.insert(0, str(root))
    os.environ[ALLOWLIST_ENV] = f"{PACKAGE},some.other"
    yield root
    sys.path.remove(str(root))
    if before is None:
        os.environ.pop(ALLOWLIST_ENV, None)
    else:
        os.environ[ALLOWLIST_ENV] = before


def tiny(hidden: int = 16) -> dict[str, Any]:
    return {"name": "module", "path": f"{PACKAGE}.nets:TinyNet", "kwargs": {"hidden": hidden}}


def test_a_prefix_allows_its_module_and_the_modules_below_only() -> None:
    assert is_allowed("acme.nets", ("acme.nets",)) and is_allowed("acme.nets.resnet", ("acme.nets",))
    assert not is_allowed("acme.netsx", ("acme.nets",)) and not is_allowed("acme", ("acme.nets",))
    assert not is_allowed("acme", ())


def test_a_class_or_a_function_builds_and_its_output_is_checked() -> None:
    from raykd.models import ModelError, build_model

    model = build_model(tiny(4), (1, 8, 8), 3)
    assert model(torch.zeros(5, 1, 8, 8)).shape == (5, 3)
    assert model.net[1].out_features == 4  # kwargs reached the class
    made = build_model({"name": "module", "path": f"{PACKAGE}.nets:small_net"}, (4,), 2)
    assert made(torch.zeros(3, 4)).shape == (3, 2)
    with pytest.raises(ModelError, match=r"OneTooMany' must return logits of shape \(batch, 3\).*"
                                         r"returned shape \(2, 4\)"):
        build_model({"name": "module", "path": f"{PACKAGE}.nets:OneTooMany"}, (1, 8, 8), 3)
    with pytest.raises(ModelError, match="has no attribute 'Missing'"):
        build_model({"name": "module", "path": f"{PACKAGE}.nets:Missing"}, (1, 8, 8), 3)


def test_the_spec_refuses_a_path_outside_the_allowlist_without_importing_it(user_code: Path) -> None:
    from raykd.core.spec import SpecError, parse_spec

    spec = {"teachers": [{"model": {"name": "module", "path": "raykd_not_allowed:Net"}}],
            "student": {"model": {"name": "mlp"}}, "methods": [{"method": "kd"}]}
    with pytest.raises(SpecError) as err:
        parse_spec(spec)
    assert "'raykd_not_allowed:Net' is not allowed" in str(err.value)
    assert f"{ALLOWLIST_ENV}=raykd_not_allowed" in str(err.value)
    assert "raykd_not_allowed" not in sys.modules and not (user_code / "IMPORTED").exists()
    with pytest.raises(SpecError, match="kwargs may not set"):
        parse_spec({**spec, "teachers": [{"model": {**tiny(), "kwargs": {"num_classes": 3}}}]})
    with pytest.raises(SpecError, match=r"\['hidden'\] apply to registry models"):
        parse_spec({**spec, "teachers": [{"model": {**tiny(), "hidden": [8]}}]})


def test_raykd_run_refuses_it_before_anything_runs(user_code: Path, tmp_path: Path) -> None:
    spec = {"data": {"dataset": "digits"}, "storage": str(tmp_path / "runs"),
            "teachers": [{"model": {"name": "mlp"}},
                         {"model": {"name": "module", "path": "raykd_not_allowed:Net"}}],
            "student": {"model": {"name": "mlp"}}, "methods": [{"method": "kd"}]}
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    env = {**os.environ, "RAY_ADDRESS": "", "PYTHONPATH": str(user_code)}
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "raykd", "run", "spec.yaml"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "teachers.1.model" in done.stderr and "'raykd_not_allowed:Net' is not allowed" in done.stderr
    assert ALLOWLIST_ENV in done.stderr and "Traceback" not in done.stderr
    assert time.perf_counter() - start < 60  # no Ray, no data: just the spec check
    assert not (tmp_path / "runs").exists() and not (user_code / "IMPORTED").exists()


def test_a_checkpoint_whose_shapes_do_not_fit_names_the_layer(tmp_path: Path) -> None:
    from raykd.models import CheckpointError, build_model, load_checkpoint, save_checkpoint

    small = build_model(tiny(8), (1, 8, 8), 3)
    path = save_checkpoint(small, tmp_path / "t.safetensors", config=tiny(16), input_shape=(1, 8, 8),
                           num_classes=3)  # the class (or its kwargs) changed since it was saved
    with pytest.raises(CheckpointError, match=r"layer net\.1\.weight is \(8, 64\) in the file, "
                                              r"\(16, 64\) in the model"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match=r"has 3 classes but the data has 4"):
        load_checkpoint(save_checkpoint(small, tmp_path / "ok.safetensors", config=tiny(8),
                                        input_shape=(1, 8, 8), num_classes=3), num_classes=4)


def test_a_pt_state_dict_loads_with_weights_only(tmp_path: Path) -> None:
    from raykd.models import CheckpointError, build_model, load_checkpoint

    torch.manual_seed(0)
    trained = build_model(tiny(8), (1, 8, 8), 3)
    torch.save({"state_dict": trained.state_dict(), "epoch": 7}, tmp_path / "mine.pt")
    loaded = load_checkpoint(tmp_path / "mine.pt", config=tiny(8), input_shape=(1, 8, 8), num_classes=3)
    x = torch.randn(4, 1, 8, 8)
    torch.testing.assert_close(loaded(x), trained(x))
    with pytest.raises(CheckpointError, match=r"layer net\.1\.weight is \(8, 64\) in the file"):
        load_checkpoint(tmp_path / "mine.pt", config=tiny(16), input_shape=(1, 8, 8), num_classes=3)
    torch.save({"model": trained}, tmp_path / "pickled.pt")  # a whole pickled module: refused
    with pytest.raises(CheckpointError, match=r"weights_only=True"):
        load_checkpoint(tmp_path / "pickled.pt", config=tiny(8), input_shape=(1, 8, 8), num_classes=3)


# --- mixed ensemble on a real local Ray ----------------------------------------------------


@pytest.fixture(scope="module")
def job(user_code: Path, ray_local: None, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A registry CNN and the user's TinyNet teach the user's small_net on digit PNGs."""
    from raykd.core.spec import parse_spec
    from raykd.engine import run_job

    root = tmp_path_factory.mktemp("mixed")
    folder = digit_folder(root / "digits", per_class=40)
    spec = parse_spec({
        "name": "mixed", "data": {"dataset": str(folder), "seed": 0},
        "teachers": [{"model": {"name": "cnn", "width": 4}, "seed": 1},
                     {"model": tiny(16), "seed": 2}],
        "teacher_train": {"epochs": 10, "batch_size": 16, "lr": 0.01},
        "student": {"model": {"name": "module", "path": f"{PACKAGE}.nets:small_net",
                              "kwargs": {"hidden": 12}}},
        "train": {"epochs": 10, "batch_size": 16, "lr": 0.01},
        "methods": [{"method": "kd"}], "scaling": {"num_workers": 1},
        "storage": str(root / "runs"),
    })
    result = run_job(spec, job_dir=root / "runs" / "job", log=lambda _: None)
    return {"result": result, "root": root}


@pytest.mark.slow
@pytest.mark.ray
def test_a_user_module_teaches_beside_a_registry_model(job: dict[str, Any]) -> None:
    teachers = job["result"]["teachers"]
    assert [t["model"]["name"] for t in teachers] == ["cnn", "module"]
    assert teachers[1]["model"]["path"] == f"{PACKAGE}.nets:TinyNet"
    assert all(t["test_accuracy"] > 0.8 for t in teachers)
    assert job["result"]["students"][0]["test_accuracy"] > 0.8


@pytest.mark.slow
@pytest.mark.ray
def test_the_user_students_checkpoint_rebuilds_only_while_allowed(
        job: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    from raykd.models import CheckpointError, checkpoint_info, load_checkpoint

    path = job["result"]["students"][0]["generations"][0]["checkpoint"]
    info = checkpoint_info(path)
    assert info["config"]["path"] == f"{PACKAGE}.nets:small_net" and info["config"]["kwargs"] == {"hidden": 12}
    model = load_checkpoint(path)
    assert model(torch.zeros(2, 1, 16, 16)).shape == (2, 3)
    monkeypatch.setenv(ALLOWLIST_ENV, "some.other")
    with pytest.raises(CheckpointError, match=rf"not on the allowlist {ALLOWLIST_ENV}"):
        load_checkpoint(path)
