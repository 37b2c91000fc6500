"""A user module teacher's logits in the cache are keyed on its model entry and its module's
source, through the job's real teacher stage on a real local Ray.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from raykd.data import load_dataset
from raykd.teachers import LogitCache

CACHE_NETS = '''
import math

from torch import nn


class ScaledNet(nn.Module):
    """``scale`` carries no parameters: the same weights give other logits."""

    def __init__(self, *, input_shape, num_classes, hidden=8, scale=1.0):
        super().__init__()
        self.scale = scale
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), hidden),
                                 nn.ReLU(), nn.Linear(hidden, num_classes))

    def forward(self, x):
        return self.net(x) * self.scale
'''


@pytest.fixture(scope="module")
def module_code(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Package ``raykd_cache_nets`` on sys.path and on the allowlist before Ray starts (its
    workers import what the driver can)."""
    from raykd.core.allowlist import ALLOWLIST_ENV

    root = tmp_path_factory.mktemp("cache_code")
    (root / "raykd_cache_nets").mkdir()
    (root / "raykd_cache_nets" / "__init__.py").write_text("")
    (root / "raykd_cache_nets" / "nets.py").write_text(CACHE_NETS)
    before = os.environ.get(ALLOWLIST_ENV)
    sys.path.insert(0, str(root))
    os.environ[ALLOWLIST_ENV] = "raykd_cache_nets"
    yield root / "raykd_cache_nets" / "nets.py"
    sys.path.remove(str(root))
    if before is None:
        os.environ.pop(ALLOWLIST_ENV, None)
    else:
        os.environ[ALLOWLIST_ENV] = before


def _module_teacher_logits(
    tmp_path: Path, name: str, checkpoint: Path, **kwargs: Any
) -> dict[str, Any]:
    """The teacher stage of a job whose one teacher is ScaledNet given as a bare checkpoint."""
    from raykd.core.jobdir import resolve_spec_paths
    from raykd.core.spec import parse_spec
    from raykd.engine.cluster import put_splits
    from raykd.engine.context import Job
    from raykd.engine.data_stage import load_data
    from raykd.engine.teacher_stage import run_teachers
    from tests.helpers.specs import digits_spec

    model = {"name": "module", "path": "raykd_cache_nets.nets:ScaledNet", "kwargs": kwargs}
    spec = parse_spec(
        digits_spec(
            str(tmp_path / "runs"),
            name=name,
            cache={"dir": str(tmp_path / "cache")},
            teachers=[{"model": model, "checkpoint": str(checkpoint)}],
        )
    )
    job = Job(spec=resolve_spec_paths(spec), job_dir=tmp_path / "runs" / name, log=lambda _: None)
    data = load_data(job)
    cache = LogitCache(tmp_path / "cache")
    teachers = run_teachers(job, data, cache, put_splits(data))
    return {
        "hits": job.result["logit_cache"]["teacher"]["train"]["cache_hits"],
        "train": np.asarray(teachers.logits["train"]),
    }


@pytest.mark.slow
@pytest.mark.ray
def test_module_teacher_logits_are_keyed_on_its_kwargs_and_source(
    module_code: Path, ray_local: None, tmp_path: Path
) -> None:
    from safetensors.torch import save_file

    from raykd.models.user import build_user_model

    config = {"path": "raykd_cache_nets.nets:ScaledNet", "kwargs": {"hidden": 8}}
    torch.manual_seed(0)
    net = build_user_model(config, load_dataset("digits").input_shape, 10)
    checkpoint = tmp_path / "scaled.safetensors"  # a bare state dict: the spec's entry builds it
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(checkpoint))

    first = _module_teacher_logits(tmp_path, "a", checkpoint, hidden=8)
    assert first["hits"] == 0
    same = _module_teacher_logits(tmp_path, "b", checkpoint, hidden=8)
    assert same["hits"] == 1  # the same entry and source: served from the cache
    np.testing.assert_array_equal(same["train"], first["train"])

    scaled = _module_teacher_logits(tmp_path, "c", checkpoint, hidden=8, scale=3.0)
    assert scaled["hits"] == 0  # a kwarg without parameters: computed again, by that model
    np.testing.assert_allclose(scaled["train"], 3.0 * first["train"], rtol=1e-4, atol=1e-4)

    module_code.write_text(
        module_code.read_text() + "\n# edited: the forward pass may differ now\n"
    )
    edited = _module_teacher_logits(tmp_path, "d", checkpoint, hidden=8)
    assert edited["hits"] == 0  # the module's source changed: its old logits are not served
