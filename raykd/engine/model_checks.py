"""Every model of a spec checked against the loaded data before Ray starts: class counts,
checkpoints, ``cache.topk``, text models on text data only, and one tokenizer for span data."""

from __future__ import annotations

from typing import Any

from raykd.core.spec import JobSpec, SpecError
from raykd.data import Dataset
from raykd.data.hf_files import CONFIG, _open, resolve_folder
from raykd.data.paths import checked_checkpoint
from raykd.data.tokenizers import tokenizer_sha256
from raykd.models import CheckpointError, load_checkpoint
from raykd.models.hf import POSITION_OFFSET

__all__ = ["check_models", "check_span_models", "check_text_models", "position_limit"]


def check_models(spec: JobSpec, data: Dataset) -> None:
    """Every declared class count, every checkpoint and ``cache.topk`` must agree with the data."""
    topk = spec.cache.topk
    if topk is not None and topk >= data.num_classes:
        raise SpecError(
            f"cache.topk={topk} must be below the number of classes ({data.num_classes}) of "
            f"dataset {spec.data.dataset!r}; give 1..{data.num_classes - 1}, or null for dense "
            "logits"
        )
    named = [(f"teachers[{i}]", t) for i, t in enumerate(spec.teachers)]
    named.append(("student", spec.student))
    check_text_models(spec, data, named)
    for where, t in named:
        declared = t.model.num_classes
        if declared is not None and declared != data.num_classes:
            raise CheckpointError(
                f"{where}.model.num_classes={declared} but dataset {spec.data.dataset!r} has "
                f"labels in [0, {data.num_classes}) ({data.num_classes} classes)"
            )
        if t.checkpoint is not None:
            load_checkpoint(checked_checkpoint(t.checkpoint), config=t.model.model_dump(),
                            input_shape=data.input_shape,
                            num_classes=data.num_classes)


def check_text_models(spec: JobSpec, data: Dataset, named: list[tuple[str, Any]]) -> None:
    """Text data takes ``name: hf`` models only, and ``hf`` models take text data only; text is
    never augmented (the shifts and noise are for images)."""
    text = getattr(data, "text", None) is not None or getattr(data, "spans", None) is not None
    for where, t in named:
        if text and t.model.name != "hf":
            raise SpecError(
                f"{where}.model.name={t.model.name!r}: dataset {spec.data.dataset!r} is text, "
                "which only Hugging Face models read; use name: hf (a path or a config and "
                "tokenizer)")
        if not text and t.model.name == "hf":
            raise SpecError(
                f"{where}.model.name='hf' reads text, but dataset {spec.data.dataset!r} is not "
                "text; use bbc-news, or a .csv/.parquet/.jsonl file with data.text_column")
    if text and spec.data.augment:
        raise SpecError("data.augment (random shifts and noise) applies to images and tables, not "
                        f"to the text of {spec.data.dataset!r}; remove data.augment")
    if getattr(data, "spans", None) is not None:
        check_span_models(spec, data, named)


def check_span_models(spec: JobSpec, data: Dataset, named: list[tuple[str, Any]]) -> None:
    """Span windows are made by one tokenizer (the student's): every model must read the same
    tokenizer files; span logits are cached dense-unpadded, never top-k."""
    assert data.spans is not None
    if spec.cache.topk is not None:
        raise SpecError(f"cache.topk applies to classification; span data {spec.data.dataset!r} "
                        "caches the valid positions' logits in float16: remove cache.topk")
    length = data.spans.max_length
    for where, t in named:
        model = t.model.model_dump()
        limit = position_limit(model) if t.model.name == "hf" else None
        if limit is not None and length > limit:
            raise SpecError(f"data.max_length={length}: {where}.model has position embeddings for "
                            f"{limit} tokens; give data.max_length <= {limit}")
        if t.model.name == "hf" and tokenizer_sha256(model) != data.spans.tokenizer_sha256:
            raise SpecError(
                f"span tasks need one tokenizer: {where}.model reads other tokenizer files than "
                f"the student's {data.spans.tokenizer!r}, which cut {spec.data.dataset!r} into "
                "windows; give every teacher that tokenizer (model.tokenizer) or a model trained "
                "with it")


def position_limit(model: dict[str, Any]) -> int | None:
    """The longest token window an ``hf`` model entry takes: ``max_position_embeddings`` of
    its config mapping (transformers' default 512 when absent) or of its folder's
    config.json, less the positions RoBERTa-like models reserve; None when unknown."""
    import json as _json

    config = model.get("config")
    if model.get("path") is not None:
        with _open(resolve_folder(str(model["path"]), "path"), CONFIG) as handle:
            config = _json.load(handle)
    if not isinstance(config, dict):
        return None
    positions = config.get("max_position_embeddings", 512)
    if not isinstance(positions, int):
        return None
    return positions - POSITION_OFFSET.get(str(config.get("model_type")), 0)
