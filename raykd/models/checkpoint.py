"""Checkpoints as safetensors files: tensors plus the architecture as JSON metadata.

Loading never unpickles: a checkpoint is tensors and strings only. A teacher may also
come as the user's own ``.pt``/``.pth`` state dict, read with PyTorch's restricted
``torch.load(weights_only=True)`` (:mod:`raykd.models.user_weights`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from raykd.core.atomic_files import atomic_path
from raykd.core.errors import ModelError, UserError
from raykd.models.registry import build_model
from raykd.models.user import UserModelError
from raykd.models.user_weights import PT_SUFFIXES, WeightsError, load_fitting, read_pt

DIGEST_KEY = "sha256"
"""Metadata entry holding :func:`state_digest` of the file's tensors (absent in files of
the user's own, which are loaded unchecked)."""


class CheckpointError(UserError, ValueError):
    """A checkpoint that is missing, corrupt, or does not match the job."""


class CheckpointDamaged(CheckpointError):
    """A checkpoint file whose bytes are wrong: truncated, not safetensors, or failing its
    sha256."""


def save_checkpoint(
    model: nn.Module, path: str | Path, *, config: dict[str, Any], input_shape: tuple[int, ...],
    num_classes: int, extra: dict[str, Any] | None = None,
    class_names: Sequence[str] | None = None, preprocessing: dict[str, Any] | None = None,
) -> Path:
    """Write ``model``'s weights and its architecture to ``path`` (.safetensors).

    ``class_names`` (one per class) and ``preprocessing`` (the JSON record of
    :class:`raykd.data.TablePrep`) make the file self-describing for ``raykd predict``
    and ``raykd export``; they are stored as the metadata entries of the same names.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in _unwrap(model).state_dict().items()}
    meta = {
        "raykd_model": json.dumps(dict(config)),
        "input_shape": json.dumps(list(input_shape)),
        "num_classes": str(num_classes),
        "extra": json.dumps(extra or {}),
    }
    meta.update(_described(num_classes, class_names, preprocessing))
    _write_atomically(state, meta, path)
    return path


def _described(num_classes: int, class_names: Sequence[str] | None,
               preprocessing: dict[str, Any] | None) -> dict[str, str]:
    """The optional metadata entries ``class_names`` and ``preprocessing``, checked."""
    meta = {}
    if class_names is not None:
        if len(class_names) != num_classes:
            raise CheckpointError(f"{len(class_names)} class names given for {num_classes} classes")
        meta["class_names"] = json.dumps([str(n) for n in class_names])
    if preprocessing is not None:
        meta["preprocessing"] = json.dumps(preprocessing)
    return meta


def describe_checkpoint(path: str | Path, *, class_names: Sequence[str] | None,
                        preprocessing: dict[str, Any] | None) -> Path:
    """Add (or replace) ``class_names`` and ``preprocessing`` in an existing checkpoint.

    The weights and the other metadata stay as they are; the file is replaced atomically,
    and left untouched when it already says exactly this (a resumed sweep's final student).
    """
    path = Path(path)
    meta, state = _read_file(path)
    _, _, classes = _read_meta(path, meta)
    described = {**meta, **_described(classes, class_names, preprocessing)}
    if described != meta:
        _write_atomically(state, described, path)
    return path


def checkpoint_info(path: str | Path) -> dict[str, Any]:
    """What a checkpoint records: ``config``, ``input_shape``, ``num_classes``,
    ``class_names`` (None when absent) and ``preprocessing`` (None when absent)."""
    path = Path(path)
    meta, _ = _read_file(path)
    config, shape, classes = _read_meta(path, meta)
    where = f"checkpoint {str(path)!r}"
    names = _meta_json(meta, "class_names", where) if "class_names" in meta else None
    if names is not None and (not isinstance(names, list) or len(names) != classes
                              or not all(isinstance(n, str) for n in names)):
        raise CheckpointError(f"{where}: metadata 'class_names' is {_short(names)}; expected a "
                              f"JSON list of {classes} strings")
    prep = _meta_json(meta, "preprocessing", where) if "preprocessing" in meta else None
    return {"config": config, "input_shape": shape, "num_classes": classes, "class_names": names,
            "preprocessing": prep}


def _read_file(path: Path) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    """A safetensors file's metadata and tensors (no pickle); CheckpointError when unreadable."""
    where = f"checkpoint {str(path)!r}"
    if not path.is_file():
        raise CheckpointError(f"{where} does not exist")
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        state = load_file(str(path))
    except (SafetensorError, ValueError) as err:
        raise CheckpointDamaged(f"{where} is not a readable safetensors file ({err}); it is "
                                "truncated or not a checkpoint: restore it or train it "
                                "again") from None
    except OSError as err:
        raise CheckpointError(f"{where} could not be read ({type(err).__name__}: {err})") from None
    stored = meta.get(DIGEST_KEY)
    if stored is not None and stored != state_digest(state):
        raise CheckpointDamaged(f"{where} fails its checksum (its weights are not the ones "
                              "written: the file was altered or damaged); restore it or train "
                              "it again")
    return dict(meta), state


def _write_atomically(state: dict[str, torch.Tensor], meta: dict[str, str], path: Path) -> None:
    """Write to a temporary file of its own next to ``path``, then rename it over ``path``.

    Concurrent writers of one path never share a temporary file, so ``path`` always holds
    one whole checkpoint; the temporary file is removed when writing fails.
    """
    meta = {**meta, DIGEST_KEY: state_digest(state)}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata=meta)


def load_checkpoint(
    path: str | Path, *, config: dict[str, Any] | None = None,
    input_shape: tuple[int, ...] | None = None, num_classes: int | None = None,
) -> nn.Module:
    """Build the checkpoint's architecture and load its weights (no pickle).

    A raykd checkpoint (safetensors with ``raykd_model`` metadata) names its own
    architecture; the given ``config`` / ``input_shape`` / ``num_classes`` are checked
    against it and a mismatch raises CheckpointError naming both values. A file of the
    user's own (``.pt``/``.pth`` read with ``torch.load(weights_only=True)``, or a bare
    safetensors state dict) is loaded into the model the three arguments describe, which
    are then required. Weights that do not fit raise CheckpointError naming the layers.
    """
    path = Path(path)
    where = f"checkpoint {str(path)!r}"
    if path.suffix.lower() in PT_SUFFIXES:
        try:
            state = read_pt(path)
        except WeightsError as err:
            raise CheckpointError(str(err)) from None
        described = _described_by_caller(where, config, input_shape, num_classes)
        return _into_model(state, where, *described)
    meta, state = _read_file(path)
    if "raykd_model" not in meta and config is not None:
        described = _described_by_caller(where, config, input_shape, num_classes)
        return _into_model(state, where, *described)
    stored, stored_shape, stored_classes = _read_meta(path, meta)
    if num_classes is not None and num_classes != stored_classes:
        raise CheckpointError(
            f"{where} has {stored_classes} classes but the data has {num_classes}"
        )
    if input_shape is not None and tuple(input_shape) != stored_shape:
        raise CheckpointError(
            f"{where} expects inputs of shape {stored_shape}, data has {tuple(input_shape)}"
        )
    if config is not None and _arch(config) != _arch(stored):
        raise CheckpointError(
            f"{where} holds model {_arch(stored)}, the spec asks for {_arch(config)}"
        )
    return _into_model(state, where, stored, stored_shape, stored_classes)


def _described_by_caller(where: str, config: dict[str, Any] | None,
                         input_shape: tuple[int, ...] | None, num_classes: int | None
                         ) -> tuple[dict[str, Any], tuple[int, ...], int]:
    """The architecture of a file without raykd metadata: the caller's, all three required."""
    if config is None or input_shape is None or num_classes is None:
        raise CheckpointError(f"{where} records no architecture (no raykd metadata); use it as a "
                              "teacher checkpoint, whose spec entry and data give the model")
    return dict(config), tuple(input_shape), int(num_classes)


def _into_model(state: dict[str, torch.Tensor], where: str, config: dict[str, Any],
                input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """Build ``config`` and load ``state`` into it; CheckpointError naming what does not fit."""
    try:
        model = build_model(config, input_shape, num_classes)
    except UserModelError as err:  # not allowed here, not importable, wrong output: say so
        raise CheckpointError(f"{where}: {err}") from None
    except (ModelError, RuntimeError, TypeError, ValueError, OverflowError) as err:
        first = (str(err).splitlines() or [type(err).__name__])[0]
        raise CheckpointError(f"{where} does not fit its architecture ({first})") from None
    try:
        return load_fitting(model, state, where)
    except WeightsError as err:
        raise CheckpointError(str(err)) from None
    except (RuntimeError, ValueError) as err:
        first = (str(err).splitlines() or [type(err).__name__])[0]
        raise CheckpointError(f"{where} does not fit its architecture ({first})") from None


def _read_meta(path: Path, meta: dict[str, str]) -> tuple[dict[str, Any], tuple[int, ...], int]:
    """The architecture, input shape and class count a checkpoint records, type-checked."""
    where = f"checkpoint {str(path)!r}"
    missing = [key for key in ("raykd_model", "input_shape", "num_classes") if key not in meta]
    if missing:
        raise CheckpointError(f"{where} lacks raykd metadata (no {missing} entries)")
    config = _meta_json(meta, "raykd_model", where)
    shape = _meta_json(meta, "input_shape", where)
    classes = _meta_json(meta, "num_classes", where)
    if not isinstance(config, dict) or not isinstance(config.get("name"), str):
        raise CheckpointError(
            f"{where}: metadata 'raykd_model' is {_short(config)}; expected a JSON object with a "
            "string 'name', e.g. {\"name\": \"mlp\", \"hidden\": [256]}"
        )
    if not _is_shape(shape):
        raise CheckpointError(
            f"{where}: metadata 'input_shape' is {_short(shape)}; expected a JSON list of 1 to 4 "
            "positive integers, e.g. [1, 28, 28]"
        )
    if not isinstance(classes, int) or isinstance(classes, bool) or classes < 2:
        raise CheckpointError(
            f"{where}: metadata 'num_classes' is {_short(classes)}; expected an integer >= 2"
        )
    return config, tuple(shape), classes


def _meta_json(meta: dict[str, str], key: str, where: str) -> Any:
    """One metadata entry, parsed as JSON; CheckpointError naming the entry when it is not."""
    try:
        return json.loads(meta[key])
    except (ValueError, RecursionError) as err:
        text = meta[key] if len(meta[key]) <= 60 else meta[key][:57] + "..."
        raise CheckpointError(
            f"{where}: metadata {key!r} is not JSON ({text!r}: {err}); expected the JSON that "
            "raykd.models.save_checkpoint writes"
        ) from None


def _is_shape(value: object) -> bool:
    """A JSON list of 1 to 4 positive integers (not booleans)."""
    return (
        isinstance(value, list) and 1 <= len(value) <= 4
        and all(isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in value)
    )


def _short(value: object) -> str:
    """A JSON value for an error message: its JSON type and at most 60 characters of it."""
    kind = {dict: "object", list: "list", str: "string", bool: "boolean", type(None): "null"}.get(
        type(value), "number"
    )
    text = json.dumps(value)
    return f"the JSON {kind} {text if len(text) <= 60 else text[:57] + '...'}"


def weights_hash(model: nn.Module) -> str:
    """sha256 over parameter names, shapes and bytes: the teacher's identity in the cache."""
    return state_digest(_unwrap(model).state_dict())[:16]


def state_digest(state: dict[str, torch.Tensor]) -> str:
    """sha256 (64 hex) over the tensors' names, shapes, dtypes and bytes, in name order.

    Stored in every checkpoint raykd writes (metadata ``sha256``) and checked on every
    read, so a truncated or altered file is refused, never loaded.
    """
    h = hashlib.sha256()
    for name, tensor in sorted(state.items()):
        t = tensor.detach().cpu().contiguous()
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(str(t.dtype).encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _arch(config: dict[str, Any]) -> dict[str, Any]:
    """The fields that decide the weights' shapes (dropout does not)."""
    keep = {"mlp": ("name", "hidden"), "cnn": ("name", "width"),
            "module": ("name", "path", "kwargs"),
            "hf": ("name", "path", "config", "tokenizer", "num_hidden_layers"),
            }.get(str(config.get("name")), ("name",))
    return {
        k: (list(config[k]) if isinstance(config.get(k), list | tuple) else config.get(k))
        for k in keep
    }


def _unwrap(model: nn.Module) -> nn.Module:
    return getattr(model, "module", model)
