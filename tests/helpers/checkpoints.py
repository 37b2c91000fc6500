"""Checkpoints of small registry models, saved as a job or a user would give them."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def model_checkpoint(
    path: Path, config: dict[str, Any], input_shape: tuple[int, ...], num_classes: int
) -> Path:
    """A freshly initialised ``config`` model saved at ``path`` (seed torch first to fix it)."""
    from raykd.models import build_model, save_checkpoint

    return save_checkpoint(
        build_model(config, input_shape, num_classes),
        path,
        config=config,
        input_shape=input_shape,
        num_classes=num_classes,
    )


def tiny_teachers(tmp_path: Path, seeds: tuple[int, ...] = (1, 2)) -> list[dict[str, Any]]:
    """Checkpoints of small MLP teachers on 6 features and 3 classes."""
    import torch

    model = {"name": "mlp", "hidden": [16]}
    configs = []
    for seed in seeds:
        torch.manual_seed(seed)
        path = model_checkpoint(tmp_path / f"t{seed}.safetensors", model, (6,), 3)
        configs.append({"model": model, "checkpoint": str(path)})
    return configs
