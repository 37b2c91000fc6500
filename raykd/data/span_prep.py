"""What span data became and what evaluation needs: :class:`SpanPrep` (the tokenizer, the
window sizes and, per split, a :class:`SpanSplit` of the questions and their windows), the
``spans`` of a span :class:`~raykd.data.dataset.Dataset` built by :mod:`raykd.data.span_data`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from raykd.data.squad import SquadExample
from raykd.data.windows import Windows

SPAN_FORMAT = "raykd-span-windows"


@dataclass(frozen=True, eq=False)
class SpanSplit:
    """One split's questions and windows (the windows' x/y are also the Split's arrays)."""

    examples: tuple[SquadExample, ...]
    windows: Windows


@dataclass(frozen=True, eq=False)
class SpanPrep:
    """How span data became windows, and what evaluation needs per split.

    Attributes:
        source: The dataset name or file.
        tokenizer: The tokenizer's spec value (a folder or ``package:<module>/<dir>``).
        tokenizer_sha256: sha256 of the tokenizer files read.
        max_length: L, tokens per window.
        doc_stride: Tokens of context shared by consecutive windows.
        max_query_length: Questions are cut to this many tokens.
        parts: ``{"train"|"val"|"test": SpanSplit}``.
    """

    source: str
    tokenizer: str
    tokenizer_sha256: str
    max_length: int
    doc_stride: int
    max_query_length: int
    parts: dict[str, SpanSplit]

    @property
    def input_shape(self) -> tuple[int, int]:
        return (4, self.max_length)

    @property
    def fitted_on(self) -> str:
        """What the windows were made with (nothing is fitted on the data)."""
        return (f"no data: windows of {self.max_length} tokens (doc_stride {self.doc_stride}) by "
                f"the tokenizer {self.tokenizer}")

    def to_dict(self) -> dict[str, Any]:
        """The JSON record (``preprocessing.json``, checkpoint metadata)."""
        return {"format": SPAN_FORMAT, "version": 1, "source": self.source,
                "tokenizer": self.tokenizer, "tokenizer_sha256": self.tokenizer_sha256,
                "max_length": self.max_length, "doc_stride": self.doc_stride,
                "max_query_length": self.max_query_length,
                "questions": {s: len(p.examples) for s, p in self.parts.items()},
                "windows": {s: len(p.windows) for s, p in self.parts.items()}}
