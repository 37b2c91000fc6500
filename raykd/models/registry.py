"""An explicit registry of student/teacher architectures.

Every builder takes ``(config, input_shape, num_classes)``; ``config`` is a plain mapping
(``ModelSpec.model_dump()``) so that this module does not depend on the spec. ``module``
is the user's own ``nn.Module`` by import path, allowlisted (:mod:`raykd.models.user`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from torch import nn

from raykd.core.errors import ModelError
from raykd.models.hf_build import build_hf_model
from raykd.models.user import build_user_model

__all__ = ["MODELS", "Builder", "ModelError", "build_model"]


def _mlp(config: Mapping[str, Any], input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """Flatten -> [Linear -> ReLU] x len(hidden) -> Dropout -> Linear(num_classes)."""
    layers: list[nn.Module] = [nn.Flatten()]
    width = math.prod(input_shape)
    for h in config.get("hidden", (256, 256)):
        layers += [nn.Linear(width, h), nn.ReLU()]
        width = h
    layers += [nn.Dropout(config.get("dropout", 0.0)), nn.Linear(width, num_classes)]
    return nn.Sequential(*layers)


def _cnn(config: Mapping[str, Any], input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """Two conv blocks (w, 2w channels, 3x3, ReLU, 2x2 max-pool), then Linear(64), Linear(C)."""
    if len(input_shape) != 3 or min(input_shape[1:]) < 4:
        raise ModelError(
            f"model 'cnn' needs image input (channels, height>=4, width>=4), got per-example shape "
            f"{input_shape}; use 'mlp' for tabular data"
        )
    c, h, w_in = input_shape
    w = int(config.get("width", 16))
    features = 2 * w * (h // 4) * (w_in // 4)
    return nn.Sequential(
        nn.Conv2d(c, w, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(w, 2 * w, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(features, 64),
        nn.ReLU(),
        nn.Dropout(config.get("dropout", 0.0)),
        nn.Linear(64, num_classes),
    )


def _linear(config: Mapping[str, Any], input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """Multinomial logistic regression: Flatten -> Linear(num_classes)."""
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), num_classes))


Builder = Callable[[Mapping[str, Any], tuple[int, ...], int], nn.Module]


def _hf(config: Mapping[str, Any], input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """A Hugging Face transformer on raw text (:mod:`raykd.models.hf`; needs ``transformers``)."""
    return build_hf_model(config, input_shape, num_classes)


MODELS: dict[str, Builder] = {"mlp": _mlp, "cnn": _cnn, "linear": _linear,
                              "module": build_user_model, "hf": _hf}
"""Every architecture by name; ``module`` is the user's class or function at
``config["path"]`` (allowlisted), checked on one batch
(:func:`raykd.models.user.build_user_model`)."""


def build_model(config: Mapping[str, Any], input_shape: tuple[int, ...],
                num_classes: int) -> nn.Module:
    """Build ``config["name"]`` for examples of ``input_shape`` and ``num_classes`` classes."""
    name = config.get("name")
    if name not in MODELS:
        raise ModelError(f"unknown model {name!r}; accepted: {sorted(MODELS)}")
    declared = config.get("num_classes")
    if declared is not None and declared != num_classes:
        raise ModelError(
            f"model {name!r} declares num_classes={declared} but the data has {num_classes} classes"
        )
    return MODELS[name](config, tuple(input_shape), num_classes)
