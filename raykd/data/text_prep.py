"""How a text source became ``(N, P, W)`` bytes: :class:`TextPrep`, the record written as
``preprocessing.json`` and as a student checkpoint's ``preprocessing`` entry, read back by
``raykd predict``. The rules are :mod:`raykd.data.text`'s.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from raykd.data.checks import DataError

FORMAT = "raykd-text-preprocessing"
VERSION = 1
MAX_TEXT_BYTES = 32_768
"""Byte width cap: a text longer than this in UTF-8 is truncated (at a character boundary)."""
RULE = ("each text: NUL characters removed, UTF-8 encoded, cut at the last character boundary "
        "at or before width bytes, zero padded to width; (N, P, width) uint8 with P = 1, or 2 "
        "for a text pair")


@dataclass(frozen=True)
class TextPrep:
    """How a text source became ``(N, P, W)`` bytes (see the module docstring).

    Attributes:
        source: Where the texts came from: ``bbc-news`` or the file's path.
        text_column: The column of the (first) text.
        text_pair_column: The column of the second text of a pair; None for single texts.
        label_column: The column of the classes.
        width: ``W``, bytes per text (the longest text, capped at ``max_bytes``).
        truncated: How many texts (over all rows and columns) were longer than ``width``
            and were cut.
        class_names: Class ``i``'s name at index ``i``.
        rows: ``read``, ``dropped_missing_label`` and ``used`` row counts.
        max_bytes: The cap the width was chosen under (:data:`MAX_TEXT_BYTES`).
        fitted_on: What was fitted: nothing (text bytes are not scaled).
    """

    source: str
    text_column: str
    text_pair_column: str | None
    label_column: str
    width: int
    truncated: int
    class_names: tuple[str, ...]
    rows: dict[str, int] = field(default_factory=dict)
    max_bytes: int = MAX_TEXT_BYTES
    fitted_on: str = "nothing: raw UTF-8 bytes, no statistics"

    @property
    def columns(self) -> tuple[str, ...]:
        """The text columns, in slot order (one, or two for a pair)."""
        pair = () if self.text_pair_column is None else (self.text_pair_column,)
        return (self.text_column, *pair)

    @property
    def input_shape(self) -> tuple[int, int]:
        """``(P, W)``."""
        return (len(self.columns), self.width)

    def to_dict(self) -> dict[str, Any]:
        """The JSON record (``preprocessing.json``, a student checkpoint's ``preprocessing``)."""
        return {"format": FORMAT, "version": VERSION, "source": self.source,
                "text_column": self.text_column, "text_pair_column": self.text_pair_column,
                "label_column": self.label_column, "width": self.width,
                "truncated": self.truncated, "max_bytes": self.max_bytes,
                "class_names": list(self.class_names), "rows": dict(self.rows),
                "input_shape": list(self.input_shape), "fitted_on": self.fitted_on, "rule": RULE}

    @classmethod
    def from_dict(cls, record: dict[str, Any], where: str) -> TextPrep:
        """Read :meth:`to_dict`'s record back; DataError naming ``where`` when it is not one."""
        try:
            kind, version = record.get("format"), record.get("version")
            if kind != FORMAT or version != VERSION:
                raise ValueError(f"format {kind!r} version {version!r}, not {FORMAT!r} {VERSION}")
            pair = record.get("text_pair_column")
            prep = cls(source=str(record["source"]), text_column=str(record["text_column"]),
                       text_pair_column=None if pair is None else str(pair),
                       label_column=str(record["label_column"]), width=int(record["width"]),
                       truncated=int(record["truncated"]),
                       class_names=tuple(str(n) for n in record["class_names"]),
                       rows={str(k): int(v) for k, v in dict(record.get("rows", {})).items()},
                       max_bytes=int(record.get("max_bytes", MAX_TEXT_BYTES)),
                       fitted_on=str(record.get("fitted_on", "")))
            if prep.width < 1 or len(prep.class_names) < 2:
                raise ValueError(f"width {prep.width}, {len(prep.class_names)} classes")
            return prep
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise DataError(f"{where}: the text preprocessing record is invalid ({err})") from None
