"""Building a ``name: hf`` model: its tokenizer, its transformers config (a pretrained
folder's, its head and depth checked, or a fresh one from a ``config`` mapping) and its
weights, wrapped as a :class:`~raykd.models.hf.TextClassifier` or
:class:`~raykd.models.hf.SpanModel` by the data's per-example shape."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from raykd.core.spec import check_hf_config
from raykd.data.hf_files import LOAD, HFModelError, LocalCopy, first_line, local_copy
from raykd.data.tokenizers import fast_tokenizer, load_tokenizer, quiet_transformers
from raykd.models.hf import POSITION_OFFSET, SPAN_SHAPES, HFWrapper, SpanModel, TextClassifier

__all__ = ["build_hf_model", "load_tokenizer"]


def build_hf_model(config: Mapping[str, Any], input_shape: tuple[int, ...],
                   num_classes: int) -> nn.Module:
    """A :class:`TextClassifier` for ``(P, W)`` bytes or a :class:`SpanModel` for ``(3, L)``
    windows, from ``config`` (``ModelSpec.model_dump()`` of a ``name: hf`` entry)."""
    shape = tuple(input_shape)
    if len(shape) == 2 and shape[0] in SPAN_SHAPES:
        kind: type[HFWrapper] = SpanModel
    elif len(shape) == 2 and shape[0] in (1, 2):
        kind = TextClassifier
    else:
        raise HFModelError(f"model name 'hf' takes text data (raw bytes of shape (1 or 2, width), "
                           f"or span windows (4, length)); the data's examples have shape {shape}")
    with quiet_transformers(), local_copy(config) as files:
        tokenizer = fast_tokenizer(files.dir)
        model_config = _model_config(config, files, tokenizer, kind, num_classes)
        _check_length(config, model_config)
        auto = _auto_class(kind)
        try:
            if config.get("path") is None:
                model = auto.from_config(model_config)
            else:
                model = auto.from_pretrained(files.dir, config=model_config, use_safetensors=True,
                                             dtype=torch.float32, disable_mmap=True, **LOAD)
        except HFModelError:
            raise
        except Exception as err:  # noqa: BLE001 - transformers' own checks: one line, named
            where = "config" if config.get("path") is None else f"{config['path']}"
            raise HFModelError(f"{where}: transformers cannot build this model "
                               f"({first_line(err)}); check the config's sizes (hidden_size a "
                               "multiple of num_attention_heads, positive integers)") from None
    return kind(model.float(), tokenizer, int(config.get("max_length", 128)),
                files.tokenizer_digest)


def _auto_class(kind: type[HFWrapper]) -> Any:
    from transformers import AutoModelForQuestionAnswering, AutoModelForSequenceClassification

    if kind is SpanModel:
        return AutoModelForQuestionAnswering
    return AutoModelForSequenceClassification


def _model_config(config: Mapping[str, Any], files: LocalCopy, tokenizer: Any,
                  kind: type[HFWrapper], num_classes: int) -> Any:
    """The transformers config: the folder's (head and depth checked) or a fresh one."""
    from transformers import AutoConfig

    if files.config is None:
        return _fresh_config(dict(config.get("config") or {}), tokenizer, kind, num_classes)
    where = f"{config['path']}/config.json"
    pretrained = files.config
    try:
        model_config = AutoConfig.from_pretrained(files.dir, **LOAD)
        have = int(model_config.num_hidden_layers)  # attribute map: distilbert's n_layers too
    except Exception as err:  # noqa: BLE001 - a config.json transformers refuses: one line
        raise HFModelError(f"{where} cannot be read as a {pretrained.get('model_type')!r} config "
                           f"({first_line(err)})") from None
    layers = config.get("num_hidden_layers")
    if layers is not None:
        if layers > have:
            raise HFModelError(f"num_hidden_layers={layers}: the pretrained model {where} has "
                               f"{have} layers; accepted: 1 to {have}")
        model_config.num_hidden_layers = int(layers)
    if kind is TextClassifier:
        _check_head(pretrained, where, num_classes)
    labels = _labels(kind, num_classes)
    if model_config.num_labels != labels:  # a new head (a matching one keeps its label names)
        model_config.num_labels = labels
    return model_config


def _labels(kind: type[HFWrapper], num_classes: int) -> int:
    """Outputs per token or text: the classes, or 2 (start, end) for spans."""
    return num_classes if kind is TextClassifier else 2


def _check_head(pretrained: dict[str, Any], where: str, num_classes: int) -> None:
    """A fine-tuned classification head must have the data's number of classes."""
    archs = pretrained.get("architectures") or []
    if not any(str(a).endswith("ForSequenceClassification") for a in archs):
        return  # a base model: the head is new
    labels = pretrained.get("id2label")
    have = len(labels) if isinstance(labels, dict) else int(pretrained.get("num_labels", 2))
    if have != num_classes:
        names = list(labels.values()) if isinstance(labels, dict) else []
        raise HFModelError(f"{where} is a fine-tuned classifier with {have} labels "
                           f"{names[:8]} but the data has {num_classes} classes; accepted: a "
                           f"head of {num_classes} labels, or a base model (a new head)")


def _fresh_config(mapping: dict[str, Any], tokenizer: Any, kind: type[HFWrapper],
                  num_classes: int) -> Any:
    """``AutoConfig.for_model(**mapping)``; vocab size and padding token from the tokenizer
    unless given (a vocab smaller than the tokenizer's is refused)."""
    from transformers import AutoConfig

    try:
        check_hf_config(mapping, "config")
    except ValueError as err:
        raise HFModelError(str(err)) from None
    mapping.setdefault("vocab_size", len(tokenizer))
    if tokenizer.pad_token_id is not None:
        mapping.setdefault("pad_token_id", tokenizer.pad_token_id)
    if int(mapping["vocab_size"]) < len(tokenizer):
        raise HFModelError(f"config.vocab_size={mapping['vocab_size']} is smaller than the "
                           f"tokenizer's {len(tokenizer)} tokens; accepted: >= {len(tokenizer)} "
                           "(or leave it out)")
    mapping["num_labels"] = _labels(kind, num_classes)
    model_type = mapping.pop("model_type")
    try:
        return AutoConfig.for_model(model_type, **mapping)
    except Exception as err:  # noqa: BLE001 - transformers' validators raise their own types
        raise HFModelError(f"config: {first_line(err)}") from None


def _check_length(config: Mapping[str, Any], model_config: Any) -> None:
    """``max_length`` must fit the model's position embeddings."""
    positions = getattr(model_config, "max_position_embeddings", None)
    if positions is None:
        return
    limit = int(positions) - POSITION_OFFSET.get(model_config.model_type, 0)
    wanted = int(config.get("max_length", 128))
    if wanted > limit:
        raise HFModelError(f"max_length={wanted}: the model has {positions} position "
                           f"embeddings; accepted: max_length <= {limit}")
