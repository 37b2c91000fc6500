"""Weights from files a user brings, and the check that they fit a model, layer by layer.

- ``.pt`` / ``.pth``: read by ``torch.load(path, weights_only=True, map_location="cpu")``,
  PyTorch's restricted unpickler (tensors and plain containers only, never arbitrary
  objects). The file holds a state dict, or a mapping with one under ``state_dict`` or
  ``model`` (the usual training-loop layouts); every value must be a tensor.
- :func:`load_fitting` compares names and shapes before loading, so that a mismatch is
  one line naming the layers (missing, unexpected, or of another shape) instead of
  PyTorch's multi-line report.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from raykd.core.errors import UserError

PT_SUFFIXES = (".pt", ".pth")
SHOWN = 3
"""Layers named per kind of mismatch in a message."""


class WeightsError(UserError, ValueError):
    """Weights that cannot be read, or do not fit the model (the message names the layers)."""


def read_pt(path: Path) -> dict[str, torch.Tensor]:
    """The state dict of a ``.pt``/``.pth`` file (see the module docstring)."""
    where = f"checkpoint {str(path)!r}"
    if not path.is_file():
        raise WeightsError(f"{where} does not exist")
    try:
        obj: Any = torch.load(str(path), weights_only=True, map_location="cpu")
    except Exception as err:  # noqa: BLE001 - corrupt, or objects the safe loader refuses
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        raise WeightsError(f"{where} could not be read with torch.load(weights_only=True) "
                           f"({first}); save the model's state_dict() only") from None
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not obj:
        raise WeightsError(f"{where} holds a {type(obj).__name__}, not a state dict; save it with "
                           "torch.save(model.state_dict(), path)")
    bad = [str(k) for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise WeightsError(f"{where}: entries {bad[:SHOWN]} are not tensors; save "
                           "model.state_dict() only")
    return {str(k): v for k, v in obj.items()}


def mismatches(model: nn.Module, state: dict[str, torch.Tensor]) -> list[str]:
    """Human descriptions of every way ``state`` does not fit ``model`` (empty: it fits)."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [f"{k} is {tuple(state[k].shape)} in the file, {tuple(v.shape)} in the model"
              for k, v in expected.items() if k in state and state[k].shape != v.shape]
    out = []
    if shapes:
        out.append("layer " + "; layer ".join(shapes[:SHOWN]) + _more(shapes))
    if missing:
        out.append(f"layers missing from the file: {missing[:SHOWN]}{_more(missing)}")
    if unexpected:
        out.append(f"layers the model does not have: {unexpected[:SHOWN]}{_more(unexpected)}")
    return out


def load_fitting(model: nn.Module, state: dict[str, torch.Tensor], where: str) -> nn.Module:
    """Load ``state`` into ``model``; WeightsError naming the layers when it does not fit."""
    problems = mismatches(model, state)
    if problems:
        raise WeightsError(f"{where} does not fit the model: " + "; ".join(problems))
    model.load_state_dict(state)
    return model


def _more(items: list[str]) -> str:
    return f" (and {len(items) - SHOWN} more)" if len(items) > SHOWN else ""
