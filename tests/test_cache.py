"""The per-teacher logit cache, the top-k sparse form and batched online serving."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from raykd.data import load_dataset
from raykd.losses.topk import from_topk, to_topk
from raykd.models import build_model, save_checkpoint
from raykd.models.user import model_identity
from raykd.teachers import LogitCache, Teacher, cache_key
from raykd.teachers.server import TeacherServer
from raykd.train.loop import teacher_batch


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture
def teacher(tmp_path, digits) -> Teacher:
    config = {"name": "mlp", "hidden": [16]}
    torch.manual_seed(0)
    path = save_checkpoint(build_model(config, digits.input_shape, 10), tmp_path / "t.safetensors",
                           config=config, input_shape=digits.input_shape, num_classes=10)
    return Teacher(0, config, digits.input_shape, 10, checkpoint=str(path))


def key_for(teacher: Teacher, split, name: str = "train", dtype: str = "float32") -> str:
    return cache_key(weights=teacher.weights_hash(), model=model_identity(teacher.config),
                     fingerprint=split.fingerprint, split=name, dtype=dtype)


def test_cached_logits_equal_fresh_ones(tmp_path, teacher, digits) -> None:
    cache = LogitCache(tmp_path / "cache")
    fresh = teacher.logits(digits.train.x)
    cache.put(key_for(teacher, digits.train), fresh)
    np.testing.assert_array_equal(cache.get(key_for(teacher, digits.train)), fresh)
    half = fresh.astype(np.float16)
    cache.put(key_for(teacher, digits.train, dtype="float16"), half)
    again = cache.get(key_for(teacher, digits.train, dtype="float16"))
    assert again.dtype == np.float16
    np.testing.assert_allclose(again.astype(np.float32), fresh, rtol=1e-3, atol=1e-3)


def test_changed_weights_or_data_miss_the_cache(tmp_path, teacher, digits) -> None:
    cache = LogitCache(tmp_path / "cache")
    cache.put(key_for(teacher, digits.train), teacher.logits(digits.train.x))
    assert cache.get(key_for(teacher, digits.train)) is not None
    other_split = load_dataset("digits", seed=1).train
    assert cache.get(key_for(teacher, other_split)) is None
    assert cache.get(key_for(teacher, digits.train, name="val")) is None
    with torch.no_grad():
        teacher.model[1].weight[0, 0] += 0.5
    assert cache.get(key_for(teacher, digits.train)) is None


def test_a_disabled_or_corrupt_cache_is_a_miss(tmp_path, teacher, digits) -> None:
    assert LogitCache(None).get("anything") is None
    cache = LogitCache(tmp_path / "cache")
    key = key_for(teacher, digits.train)
    (tmp_path / "cache" / f"{key}.npz").write_bytes(b"torn write")
    assert cache.get(key) is None
    assert not (tmp_path / "cache" / f"{key}.npz").exists()  # deleted: computed again
    assert len(cache.rejected) == 1 and f"{key}.npz is damaged" in cache.rejected[0]


@pytest.mark.parametrize("damage", ["truncated", "altered"])
def test_a_damaged_entry_fails_its_checksum_and_is_never_used(tmp_path, damage: str) -> None:
    cache = LogitCache(tmp_path)
    logits = np.arange(60, dtype=np.float32).reshape(6, 10)
    cache.put("k", logits)
    path = tmp_path / "k.npz"
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[:-40])
    else:  # a well-formed file whose numbers changed (its zip CRCs are right: only sha256 sees it)
        with np.load(path, allow_pickle=False) as z:
            stored = z["sha256"]
        changed = logits.copy()
        changed[2, 3] += 1.0
        np.savez(path, sha256=stored, logits=changed)
    assert cache.get("k") is None and not path.exists()
    assert cache.rejected and "damaged" in cache.rejected[0]
    cache.put("k", logits)  # computed again: the new entry reads back whole
    np.testing.assert_array_equal(cache.get("k"), logits)


@pytest.mark.parametrize("damage", ["truncated", "altered"])
def test_a_damaged_checkpoint_is_refused_naming_the_file(tmp_path, teacher, damage: str) -> None:
    from raykd.models import CheckpointError, load_checkpoint

    path = tmp_path / "t.safetensors"  # the teacher fixture's file
    load_checkpoint(path)  # whole, it loads
    raw = bytearray(path.read_bytes())
    if damage == "truncated":
        raw = raw[: len(raw) - 100]
    else:
        raw[-5] ^= 0xFF  # one byte of the last tensor's data
    path.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match=str(path)) as err:
        load_checkpoint(path)
    expected = "not a readable safetensors" if damage == "truncated" else "fails its checksum"
    assert expected in str(err.value)


def test_topk_reconstruction_within_its_documented_bound() -> None:
    rng = np.random.default_rng(0)
    logits = (rng.standard_normal((3, 500, 100)) * 4).astype(np.float32)
    for k in (1, 5, 20):
        sparse = to_topk(logits, k)
        dense = from_topk(sparse)
        p = torch.softmax(torch.from_numpy(logits), -1).numpy()
        q = torch.softmax(torch.from_numpy(dense), -1).numpy()
        tail = 1 - np.sort(p, -1)[..., -k:].sum(-1)
        tv = 0.5 * np.abs(p - q).sum(-1)
        assert (tv <= tail + 1e-5).all()
        np.testing.assert_array_equal(dense.argmax(-1), logits.argmax(-1))
        idx = np.array([7, 3, 499])
        np.testing.assert_allclose(teacher_batch(sparse, idx).numpy(), dense[:, idx], rtol=1e-6)
    with pytest.raises(ValueError, match="cache.topk=100 must be in"):
        to_topk(logits, 100)


def test_server_merges_concurrent_requests_into_one_pass(teacher, digits) -> None:
    config = {"name": "mlp", "hidden": [16]}
    server = TeacherServer(0, config, digits.input_shape, 10)
    server.teacher.model.load_state_dict(teacher.model.state_dict())
    server.set_clients(3)
    parts = [digits.train.x[i * 32 : (i + 1) * 32] for i in range(3)]

    async def three_workers():
        return await asyncio.gather(*(server.logits(p) for p in parts))

    outs = asyncio.run(three_workers())
    assert server.teacher.forward_passes == 1 and server.requests == 3
    for part, out in zip(parts, outs, strict=True):
        np.testing.assert_allclose(out, teacher.logits(part), rtol=1e-5, atol=1e-6)


# --- keyed on the model entry and the module's source (a real local Ray) -------------------

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


def _module_teacher_logits(tmp_path: Path, name: str, checkpoint: Path, **kwargs: Any) -> dict[str, Any]:
    """The teacher stage of a job whose one teacher is ScaledNet given as a bare checkpoint."""
    from raykd.core.jobdir import resolve_spec_paths
    from raykd.core.spec import parse_spec
    from raykd.engine.cluster import put_splits
    from raykd.engine.context import Job
    from raykd.engine.data_stage import load_data
    from raykd.engine.teacher_stage import run_teachers
    from tests.conftest import digits_spec

    model = {"name": "module", "path": "raykd_cache_nets.nets:ScaledNet", "kwargs": kwargs}
    spec = parse_spec(digits_spec(str(tmp_path / "runs"), name=name, cache={"dir": str(tmp_path / "cache")},
                                  teachers=[{"model": model, "checkpoint": str(checkpoint)}]))
    job = Job(spec=resolve_spec_paths(spec), job_dir=tmp_path / "runs" / name, log=lambda _: None)
    data = load_data(job)
    cache = LogitCache(tmp_path / "cache")
    teachers = run_teachers(job, data, cache, put_splits(data))
    return {"hits": job.result["logit_cache"]["teacher"]["train"]["cache_hits"],
            "train": np.asarray(teachers.logits["train"])}


@pytest.mark.ray
def test_module_teacher_logits_are_keyed_on_its_kwargs_and_source(
        module_code: Path, ray_local: None, tmp_path: Path, digits) -> None:
    from safetensors.torch import save_file

    from raykd.models.user import build_user_model

    config = {"path": "raykd_cache_nets.nets:ScaledNet", "kwargs": {"hidden": 8}}
    torch.manual_seed(0)
    net = build_user_model(config, digits.input_shape, 10)
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

    module_code.write_text(module_code.read_text() + "\n# edited: the forward pass may differ now\n")
    edited = _module_teacher_logits(tmp_path, "d", checkpoint, hidden=8)
    assert edited["hits"] == 0  # the module's source changed: its old logits are not served
