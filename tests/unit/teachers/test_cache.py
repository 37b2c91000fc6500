"""The per-teacher logit cache, the top-k sparse form and batched online serving."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
import torch

from raykd.data import load_dataset
from raykd.losses.topk import from_topk, to_topk
from raykd.models.user import model_identity
from raykd.teachers import LogitCache, Teacher, cache_key
from raykd.teachers.actor import TeacherServer
from raykd.train.loop import teacher_batch
from tests.helpers.checkpoints import model_checkpoint


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture
def teacher(tmp_path, digits) -> Teacher:
    config = {"name": "mlp", "hidden": [16]}
    torch.manual_seed(0)
    path = model_checkpoint(tmp_path / "t.safetensors", config, digits.input_shape, 10)
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







