"""The model registry and pickle-free checkpoints."""

from __future__ import annotations

import re
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from raykd.models import (
    MODELS,
    CheckpointError,
    ModelError,
    build_model,
    load_checkpoint,
    save_checkpoint,
    weights_hash,
)


@pytest.mark.parametrize(
    ("config", "shape"),
    [({"name": "mlp", "hidden": [16, 8]}, (1, 8, 8)), ({"name": "cnn", "width": 4}, (1, 28, 28)),
     ({"name": "linear"}, (5,)), ({"name": "mlp"}, (7,))],
)
def test_registry_builds_models_with_c_outputs(config: dict, shape: tuple) -> None:
    model = build_model(config, shape, 10)
    assert model(torch.zeros(3, *shape)).shape == (3, 10)


def test_sizes_express_large_to_small() -> None:
    def n(m: torch.nn.Module) -> int:
        return sum(p.numel() for p in m.parameters())

    big = build_model({"name": "cnn", "width": 16}, (1, 28, 28), 10)
    small = build_model({"name": "cnn", "width": 4}, (1, 28, 28), 10)
    assert n(big) > 3 * n(small)


def test_unknown_model_and_bad_shapes_name_the_problem() -> None:
    with pytest.raises(ModelError, match="unknown model 'resnet'.*cnn"):
        build_model({"name": "resnet"}, (1, 8, 8), 10)
    with pytest.raises(ModelError, match="needs image input"):
        build_model({"name": "cnn"}, (64,), 10)
    with pytest.raises(ModelError, match="num_classes=5 but the data has 10"):
        build_model({"name": "mlp", "num_classes": 5}, (4,), 10)
    assert set(MODELS) >= {"mlp", "cnn"}


def test_checkpoint_round_trip_is_safetensors(tmp_path) -> None:
    config = {"name": "mlp", "hidden": [8]}
    model = build_model(config, (4,), 3)
    path = save_checkpoint(model, tmp_path / "m.safetensors", config=config, input_shape=(4,),
                           num_classes=3)
    assert path.read_bytes()[8:9] == b"{"  # safetensors: u64 header length, then a JSON header
    loaded = load_checkpoint(path, config=config, input_shape=(4,), num_classes=3)
    x = torch.randn(5, 4)
    torch.testing.assert_close(loaded(x), model(x))
    assert weights_hash(loaded) == weights_hash(model)


def test_checkpoint_errors(tmp_path) -> None:
    config = {"name": "mlp", "hidden": [8]}
    path = save_checkpoint(build_model(config, (4,), 3), tmp_path / "m.safetensors", config=config,
                           input_shape=(4,), num_classes=3)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.safetensors")
    (tmp_path / "bad.safetensors").write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        load_checkpoint(tmp_path / "bad.safetensors")
    with pytest.raises(CheckpointError, match="has 3 classes but the data has 10"):
        load_checkpoint(path, num_classes=10)
    with pytest.raises(CheckpointError, match="expects inputs of shape"):
        load_checkpoint(path, input_shape=(1, 8, 8))
    with pytest.raises(CheckpointError, match="holds model"):
        load_checkpoint(path, config={"name": "mlp", "hidden": [16]})


def test_weights_hash_changes_with_weights() -> None:
    model = build_model({"name": "linear"}, (4,), 3)
    before = weights_hash(model)
    with torch.no_grad():
        model[1].weight[0, 0] += 1.0
    assert weights_hash(model) != before


def _checkpoint_with_meta(tmp_path: Path, meta: dict[str, str]) -> Path:
    """An MLP checkpoint whose raykd metadata entries ``meta`` replace the right ones."""
    from safetensors.torch import save_file

    config = {"name": "mlp", "hidden": [8]}
    path = tmp_path / "m.safetensors"
    stored = {"raykd_model": '{"name": "mlp", "hidden": [8]}', "input_shape": "[4]",
              "num_classes": "3", **meta}
    state = {k: v.contiguous() for k, v in build_model(config, (4,), 3).state_dict().items()}
    save_file(state, str(path), metadata=stored)
    return path


@pytest.mark.parametrize(
    ("meta", "expected"),
    [({"raykd_model": "[1]"}, "'raykd_model' is the JSON list"),
     ({"raykd_model": '"mlp"'}, "'raykd_model' is the JSON string"),
     ({"raykd_model": '{"hidden": [8]}'}, "with a string 'name'"),
     ({"raykd_model": '{"name": "mlp", "hidden": ["a"]}'}, "does not fit its architecture"),
     ({"raykd_model": '{"name": "mlp", "hidden": 8}'}, "does not fit its architecture"),
     ({"raykd_model": '{"name": "mlp", "hidden": [8], "dropout": "x"}'}, "does not fit"),
     ({"input_shape": '"4"'}, "'input_shape' is the JSON string"),
     ({"input_shape": "[4.0]"}, "'input_shape' is the JSON list"),
     ({"input_shape": "[true]"}, "1 to 4 positive integers"),
     ({"input_shape": "4"}, "'input_shape' is the JSON number"),
     ({"num_classes": "3.0"}, "'num_classes' is the JSON number 3.0; expected an integer >= 2"),
     ({"num_classes": "x"}, "'num_classes' is not JSON"),
     ({"num_classes": "1"}, "expected an integer >= 2"),
     ({"raykd_model": "[" * 100_000}, "'raykd_model' is not JSON")],
)
def test_checkpoint_metadata_of_the_wrong_type(tmp_path: Path, meta: dict[str, str],
                                               expected: str) -> None:
    path = _checkpoint_with_meta(tmp_path, meta)
    with pytest.raises(CheckpointError, match=re.escape(expected)) as info:
        load_checkpoint(path)
    assert "m.safetensors" in str(info.value)


def test_concurrent_saves_to_one_path_leave_one_whole_checkpoint(tmp_path: Path) -> None:
    config = {"name": "mlp", "hidden": [64]}
    models = [build_model(config, (16,), 3) for _ in range(8)]
    hashes = {weights_hash(m) for m in models}
    path = tmp_path / "shared.safetensors"
    barrier = threading.Barrier(len(models))

    def save(model: torch.nn.Module) -> None:
        barrier.wait()
        for _ in range(10):
            save_checkpoint(model, path, config=config, input_shape=(16,), num_classes=3)

    with ThreadPoolExecutor(len(models)) as pool:
        for future in [pool.submit(save, m) for m in models]:
            future.result()  # a writer that lost its temporary file would raise here
    assert weights_hash(load_checkpoint(path, config=config)) in hashes
    assert [p.name for p in tmp_path.iterdir()] == ["shared.safetensors"]


def test_failed_save_removes_its_temporary_file_and_keeps_the_old_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import raykd.models.checkpoint as checkpoint

    config = {"name": "linear"}
    model = build_model(config, (4,), 3)
    path = save_checkpoint(model, tmp_path / "m.safetensors", config=config, input_shape=(4,),
                           num_classes=3)

    def disk_full(state, filename, metadata=None) -> None:
        Path(filename).write_bytes(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoint, "save_file", disk_full)
    with pytest.raises(OSError, match="No space left"):
        save_checkpoint(build_model(config, (4,), 3), path, config=config, input_shape=(4,),
                        num_classes=3)
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]
    assert weights_hash(load_checkpoint(path)) == weights_hash(model)
