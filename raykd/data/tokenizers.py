"""The tokenizer of a ``name: hf`` model, read as the model's files are: through the checked
reader of :mod:`raykd.data.hf_files` into a private copy, from which ``transformers`` loads a
fast tokenizer (``local_files_only``, no remote code). The span windows cut their examples
with it (:mod:`raykd.data.span_data`), and ``raykd.models`` builds its models with it.
:func:`tokenizer_sha256` names a tokenizer by its files' content, wherever they lie.
``transformers`` loads on first use (text and span jobs only).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from raykd.data.hf_files import (
    LOAD,
    TOKENIZER_FILES,
    HFModelError,
    _read,
    _sources,
    first_line,
    local_copy,
)

__all__ = ["fast_tokenizer", "load_tokenizer", "quiet_transformers", "tokenizer_sha256"]


@contextmanager
def quiet_transformers() -> Iterator[None]:
    """transformers' load reports and progress bars off while raykd builds a model."""
    from transformers.utils import logging as hf_logging

    level, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


def fast_tokenizer(folder: Path) -> Any:
    """The fast tokenizer of a private copy's folder (HFModelError when it is none, or has no
    padding token)."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, use_fast=True, **LOAD)
    except (OSError, ValueError, TypeError, KeyError) as err:
        raise HFModelError(f"the tokenizer files could not be loaded ({first_line(err)}); "
                           "expected a fast tokenizer's tokenizer.json") from None
    if not getattr(tokenizer, "is_fast", False):
        raise HFModelError("the tokenizer is not a fast tokenizer; tokenizer.json is required")
    if tokenizer.pad_token_id is None:
        raise HFModelError("the tokenizer has no padding token (pad_token in tokenizer_config.json "
                           "or special_tokens_map.json); raykd pads each batch")
    return tokenizer


def load_tokenizer(value: str) -> Any:
    """The fast tokenizer of a folder or ``package:<module>/<dir>``, read like a model's
    (checked, copied, local files only); its content identity is
    ``files_digest({"tokenizer": value})`` (:func:`raykd.data.hf_files.files_digest`)."""
    with quiet_transformers(), local_copy({"tokenizer": value}) as files:
        return fast_tokenizer(files.dir)


def tokenizer_sha256(model: dict[str, Any]) -> str:
    """sha256 over (file name, sha256 of bytes) of the tokenizer files an ``hf`` model entry
    reads (from ``tokenizer``, else from ``path``): equal iff the tokenizers are the same
    files, wherever they lie."""
    parts = sorted((n, _read(folder, n, None)) for folder, names, _ in _sources(model)
                   for n in names if n in TOKENIZER_FILES)
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()
