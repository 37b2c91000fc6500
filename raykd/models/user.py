"""The user's own ``nn.Module`` as a teacher or student: ``{"name": "module", ...}``.

The contract (also in the README)::

    model: {name: module, path: "mymodels.nets:SmallNet", kwargs: {hidden: 64}}

- ``path`` is ``package.module:Attribute``; the module must be on the allowlist
  ``RAYKD_MODEL_ALLOWLIST`` (:mod:`raykd.core.allowlist`), checked in every process before it
  imports anything: the driver, each teacher and student actor, and whoever loads a
  checkpoint of the model.
- ``Attribute`` is a class (a subclass of ``torch.nn.Module``) or a function that returns
  one. raykd calls it as ``Attribute(**kwargs, input_shape=(C, H, W) or (D,),
  num_classes=C)``: the two keyword arguments come from the data, ``kwargs`` (JSON values)
  from the spec.
- The model maps a float32 batch ``(B, *input_shape)`` to logits ``(B, num_classes)``;
  raykd checks this on one batch of two zero inputs when it builds the model, so a wrong
  output shape is a clear error before any training.
- Its weights are its ``state_dict()``: checkpoints store them as safetensors with the
  model entry (path and kwargs) in the metadata, and loading rebuilds the model by the
  same call (allowlist re-checked).

The module must be importable where the job runs: installed, on ``PYTHONPATH``, or sent
with ``ray job submit --working-dir .`` (or a ``runtime_env``); for a local Ray, raykd
passes the driver's import path on to its workers.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from raykd.core.allowlist import NotAllowedError, check_path
from raykd.core.errors import ModelError
from raykd.data.hf_files import files_digest
from raykd.models.hf import CHARS_PER_TOKEN

RESERVED_KWARGS = ("input_shape", "num_classes")


class UserModelError(ModelError):
    """A user model that cannot be imported, built, or gives logits of the wrong shape."""


def resolve(path: str) -> Any:
    """The class or function ``path`` names, after the allowlist check (which imports nothing)."""
    try:
        module_name, attr = check_path(path)
    except NotAllowedError as err:
        raise UserModelError(str(err)) from None
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise UserModelError(
            f"model path {path!r}: module {module_name!r} cannot be imported here ({err}); "
            "install it, put its folder on PYTHONPATH, or send it with `ray job submit "
            "--working-dir`") from None
    target = getattr(module, attr, None)
    if target is None:
        raise UserModelError(f"model path {path!r}: module {module_name!r} has no attribute "
                             f"{attr!r}")
    if not callable(target):
        raise UserModelError(f"model path {path!r} names a {type(target).__name__}, not a class "
                             "or function")
    return target


def source_sha256(path: str) -> str:
    """sha256 of the source file of the module ``path`` names (``package.module:Attribute``).

    The allowlist is checked first; finding the file imports the module's parent packages
    only. A cache keyed on it misses once the user edits the module.
    """
    try:
        module_name, _ = check_path(path)
    except NotAllowedError as err:
        raise UserModelError(str(err)) from None
    try:
        found = importlib.util.find_spec(module_name)
    except (ImportError, ValueError) as err:
        raise UserModelError(f"model path {path!r}: module {module_name!r} cannot be found here "
                             f"({err})") from None
    origin = getattr(found, "origin", None)
    if found is None or not origin or not Path(origin).is_file():
        raise UserModelError(f"model path {path!r}: module {module_name!r} has no source file "
                             "here; install it, or put its folder on PYTHONPATH")
    return hashlib.sha256(Path(origin).read_bytes()).hexdigest()


def model_identity(config: Mapping[str, Any]) -> str:
    """What a model entry builds, as one string: its canonical JSON (kwargs included), for
    ``name: module`` the sha256 of the module's source (:func:`source_sha256`), and for
    ``name: hf`` the sha256 of every file read from its folders
    (:func:`raykd.data.hf_files.files_digest`), the text cut and the versions of
    transformers and tokenizers.

    Caches of a model's outputs key on it (with the weights): another kwarg, even one that
    carries no parameters, or an edited module never reads the old entries.
    """
    ident: dict[str, Any] = {"model": dict(config)}
    if config.get("name") == "module":
        ident["source"] = source_sha256(str(config.get("path")))
    if config.get("name") == "hf":
        import tokenizers
        import transformers

        ident["files"] = files_digest(config)
        # what turns the same files into other logits: the text cut and the libraries
        ident["text_rule"] = {"chars_per_token": CHARS_PER_TOKEN, "truncation": "longest_first"}
        ident["libraries"] = {"transformers": transformers.__version__,
                              "tokenizers": tokenizers.__version__}
    text = json.dumps(ident, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def build_user_model(config: Mapping[str, Any], input_shape: tuple[int, ...],
                     num_classes: int) -> nn.Module:
    """Import, call and check ``config["path"]`` (see the module docstring)."""
    path = str(config.get("path"))
    kwargs = dict(config.get("kwargs") or {})
    clash = [k for k in RESERVED_KWARGS if k in kwargs]
    if clash:
        raise UserModelError(f"model {path!r}: kwargs may not set {clash}; raykd passes them "
                             "from the data")
    target = resolve(path)
    try:
        model = target(**kwargs, input_shape=tuple(input_shape), num_classes=num_classes)
    except TypeError as err:
        raise UserModelError(
            f"model {path!r} could not be called as {_call(target)}(**{kwargs}, input_shape="
            f"{tuple(input_shape)}, num_classes={num_classes}): {err}") from None
    if not isinstance(model, nn.Module):
        raise UserModelError(f"model {path!r} returned a {type(model).__name__}, not a "
                             "torch.nn.Module")
    check_output(model, path, input_shape, num_classes)
    return model


def check_output(model: nn.Module, path: str, input_shape: tuple[int, ...],
                 num_classes: int) -> None:
    """One forward pass on two zero inputs must give ``(2, num_classes)`` logits.

    Zeros and eval mode: the pass draws no random numbers and leaves BatchNorm statistics
    as they are, so building stays deterministic in the caller's seed.
    """
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(torch.zeros((2, *input_shape), dtype=torch.float32))
    except Exception as err:  # noqa: BLE001 - any failure of the user's forward is theirs
        first = (str(err).splitlines() or [type(err).__name__])[0]
        raise UserModelError(f"model {path!r} failed on a batch of shape (2, "
                             f"{', '.join(map(str, input_shape))}): {first}") from None
    finally:
        model.train(was_training)
    shape = tuple(out.shape) if isinstance(out, torch.Tensor) else None
    if shape != (2, num_classes):
        got = f"shape {shape}" if shape is not None else f"a {type(out).__name__}"
        raise UserModelError(f"model {path!r} must return logits of shape (batch, {num_classes}) "
                             f"for inputs (batch, {', '.join(map(str, input_shape))}); it returned "
                             f"{got} for a batch of 2")


def _call(target: Any) -> str:
    return str(getattr(target, "__qualname__", repr(target)))
