"""The model registry and pickle-free checkpoints."""

from __future__ import annotations

import pytest
import torch

from raykd.models import MODELS, CheckpointError, ModelError, build_model, load_checkpoint, save_checkpoint
from raykd.models import weights_hash


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
    path = save_checkpoint(model, tmp_path / "m.safetensors", config=config, input_shape=(4,), num_classes=3)
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
