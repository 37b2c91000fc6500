"""Checkpoints as safetensors files: tensors plus the architecture as JSON metadata.

Loading never unpickles: a checkpoint is tensors and strings only.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from raykd.errors import UserError
from raykd.models.registry import ModelError, build_model


class CheckpointError(UserError, ValueError):
    """A checkpoint that is missing, corrupt, or does not match the job."""


def save_checkpoint(
    model: nn.Module, path: str | Path, *, config: dict[str, Any], input_shape: tuple[int, ...],
    num_classes: int, extra: dict[str, Any] | None = None,
) -> Path:
    """Write ``model``'s weights and its architecture to ``path`` (.safetensors)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in _unwrap(model).state_dict().items()}
    meta = {
        "raykd_model": json.dumps(dict(config)),
        "input_shape": json.dumps(list(input_shape)),
        "num_classes": str(num_classes),
        "extra": json.dumps(extra or {}),
    }
    tmp = path.with_suffix(".tmp")
    save_file(state, str(tmp), metadata=meta)
    tmp.replace(path)
    return path


def load_checkpoint(
    path: str | Path, *, config: dict[str, Any] | None = None,
    input_shape: tuple[int, ...] | None = None, num_classes: int | None = None,
) -> nn.Module:
    """Build the checkpoint's architecture and load its weights (no pickle).

    The given ``config`` / ``input_shape`` / ``num_classes`` are checked against what the
    checkpoint records; a mismatch raises CheckpointError naming both values.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"checkpoint {str(path)!r} is not a readable safetensors file ({err})") from None
    try:
        stored = json.loads(meta["raykd_model"])
        stored_shape = tuple(json.loads(meta["input_shape"]))
        stored_classes = int(meta["num_classes"])
    except (KeyError, ValueError) as err:
        raise CheckpointError(f"checkpoint {str(path)!r} lacks raykd metadata ({err})") from None
    if num_classes is not None and num_classes != stored_classes:
        raise CheckpointError(
            f"checkpoint {str(path)!r} has {stored_classes} classes but the data has {num_classes}"
        )
    if input_shape is not None and tuple(input_shape) != stored_shape:
        raise CheckpointError(
            f"checkpoint {str(path)!r} expects inputs of shape {stored_shape}, data has {tuple(input_shape)}"
        )
    if config is not None and _arch(config) != _arch(stored):
        raise CheckpointError(
            f"checkpoint {str(path)!r} holds model {_arch(stored)}, the spec asks for {_arch(config)}"
        )
    try:
        model = build_model(stored, stored_shape, stored_classes)
        model.load_state_dict(state)
    except (ModelError, RuntimeError) as err:
        first = str(err).splitlines()[0]
        raise CheckpointError(f"checkpoint {str(path)!r} does not fit its architecture ({first})") from None
    return model


def weights_hash(model: nn.Module) -> str:
    """sha256 over parameter names, shapes and bytes: the teacher's identity in the cache."""
    h = hashlib.sha256()
    for name, tensor in sorted(_unwrap(model).state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(str(t.dtype).encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


def _arch(config: dict[str, Any]) -> dict[str, Any]:
    """The fields that decide the weights' shapes (dropout does not)."""
    keep = {"mlp": ("name", "hidden"), "cnn": ("name", "width")}.get(str(config.get("name")), ("name",))
    return {k: (list(config[k]) if isinstance(config.get(k), list | tuple) else config.get(k)) for k in keep}


def _unwrap(model: nn.Module) -> nn.Module:
    return getattr(model, "module", model)
