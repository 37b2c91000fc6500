"""Hugging Face transformers on text (raykd.models.hf) and the text byte encoding."""

from __future__ import annotations

import numpy as np
import pytest

from raykd.data.text_bytes import decode_batch, decode_row, encode_texts


def test_text_bytes_round_trip_non_ascii_and_pairs() -> None:
    texts = ["plain", "héllo wörld", "日本語のテキスト", "emoji 🙂 end", "", "nul\x00gone"]
    x = encode_texts(texts)
    assert x.dtype == np.uint8 and x.flags.c_contiguous
    assert x.shape == (6, 1, len("日本語のテキスト".encode()))
    assert [decode_row(r)[0] for r in x] == [t.replace("\x00", "") for t in texts]
    pairs = [("Who said it?", "“Yes,” said Zoë."), ("q", "")]
    xp = encode_texts(pairs, width=32)
    assert xp.shape == (2, 2, 32)
    assert decode_batch(xp) == [list(p) for p in pairs]


def test_text_bytes_cut_at_a_character_boundary() -> None:
    x = encode_texts(["aé日🙂"], width=5)  # a(1) é(2) 日(3): the cut falls inside 日
    assert decode_row(x[0]) == ["aé"]
    assert bytes(x[0, 0]) == "aé".encode() + b"\x00\x00"
    with pytest.raises(ValueError, match="all pairs"):
        encode_texts(["a", ("b", "c")])
    with pytest.raises(ValueError, match="all pairs"):
        encode_texts([("a", "b", "c")])
