"""SQuAD questions cut into fixed-length windows of one shared (fast) tokenizer.

Each window is ``[CLS] question [SEP] context slice [SEP] padding`` of ``max_length``
tokens. A context longer than one window is split into several that overlap by
``doc_stride`` tokens (the Hugging Face ``stride`` convention, as in ``run_qa.py``), so an
answer cut by one window's edge lies whole inside a neighbour. The question is cut to its
first ``max_query_length`` tokens first.

Labels per window: the gold start and end token positions of the (first) answer when it
lies wholly inside the window's context slice, else ``(0, 0)``: position 0 (the CLS token)
is the "no answer" position, also for every window of an unanswerable question.

The window, not the question, is the unit of caching and training; evaluation gathers a
question's windows again (:mod:`raykd.metrics.squad`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from raykd.data.checks import DataError
from raykd.data.squad import SquadExample


@dataclass(frozen=True, eq=False)
class Windows:
    """The windows of a list of questions, as numpy arrays (N_win windows of L tokens).

    Attributes:
        x: int64 (N_win, 3, L): input_ids, attention_mask, token_type_ids (zeros for a
            tokenizer without token types), padded to L.
        y: int64 (N_win, 2): gold start and end token positions; (0, 0) = no answer here.
        valid: bool (N_win, L): positions an answer may start or end at: the context tokens
            plus position 0 (no answer). Question, special and padding tokens are False.
        offsets: int32 (N_win, L, 2): each context token's ``[start, end)`` characters in
            its context; -1 at every other position.
        example: int64 (N_win,): index of the window's question in the examples given.
    """

    x: np.ndarray
    y: np.ndarray
    valid: np.ndarray
    offsets: np.ndarray
    example: np.ndarray

    def __len__(self) -> int:
        return int(self.x.shape[0])


def check_window_sizes(max_length: int, doc_stride: int, max_query_length: int,
                       num_special: int) -> None:
    """DataError unless a window holds the longest question, and more context than the overlap."""
    context_room = max_length - max_query_length - num_special
    if not (max_query_length >= 1 and doc_stride >= 0 and context_room > doc_stride):
        raise DataError(
            f"window sizes max_length={max_length}, doc_stride={doc_stride}, "
            f"max_query_length={max_query_length} leave {context_room} context tokens per "
            f"window; expected max_length - max_query_length - {num_special} special tokens "
            "> doc_stride >= 0 (e.g. 384, 128, 64)")


def check_fast(tokenizer: Any) -> None:
    """DataError unless ``tokenizer`` is a fast (Rust ``tokenizers``) tokenizer with offsets."""
    if not getattr(tokenizer, "is_fast", False):
        raise DataError(f"span extraction needs a fast tokenizer (a tokenizer.json) for "
                        f"character offsets; got {type(tokenizer).__name__}")


def cut_question(tokenizer: Any, question: str, max_query_length: int) -> str:
    """``question`` cut after its first ``max_query_length`` tokens (unchanged if shorter)."""
    enc = tokenizer(question, add_special_tokens=False, return_offsets_mapping=True)
    offsets = enc["offset_mapping"]
    if len(offsets) <= max_query_length:
        return question
    return question[: offsets[max_query_length - 1][1]]


def make_windows(examples: Sequence[SquadExample], tokenizer: Any, *, max_length: int = 384,
                 doc_stride: int = 128, max_query_length: int = 64) -> Windows:
    """Tokenize question/context pairs into labelled windows (module docstring).

    Args:
        examples: The questions (e.g. from :func:`raykd.data.squad.read_squad`).
        tokenizer: A Hugging Face fast tokenizer whose pair encoding starts with one special
            token (CLS) at position 0, as BERT's, RoBERTa's and ELECTRA's do.
        max_length: L, tokens per window (question, context and special tokens).
        doc_stride: Tokens of context shared by consecutive windows of one context.
        max_query_length: Questions are cut to this many tokens.

    Returns:
        The :class:`Windows`, in the order of the examples.

    Raises:
        DataError: on a slow tokenizer or window sizes that leave no room for the context.
    """
    check_fast(tokenizer)
    check_window_sizes(max_length, doc_stride, max_query_length,
                       tokenizer.num_special_tokens_to_add(pair=True))
    if getattr(tokenizer, "padding_side", "right") != "right" or getattr(
            tokenizer, "truncation_side", "right") != "right":
        import copy

        tokenizer = copy.copy(tokenizer)  # position 0 must be the first special token
        tokenizer.padding_side, tokenizer.truncation_side = "right", "right"
    questions = [cut_question(tokenizer, ex.question.lstrip(), max_query_length)
                 for ex in examples]
    enc = tokenizer(questions, [ex.context for ex in examples], truncation="only_second",
                    max_length=max_length, stride=doc_stride, return_overflowing_tokens=True,
                    return_offsets_mapping=True, padding="max_length")
    n = len(enc["input_ids"])
    ids = np.asarray(enc["input_ids"], dtype=np.int64).reshape(n, max_length)
    attention = np.asarray(enc["attention_mask"], dtype=np.int64).reshape(n, max_length)
    types = (np.asarray(enc["token_type_ids"], dtype=np.int64).reshape(n, max_length)
             if "token_type_ids" in enc else np.zeros_like(ids))
    example = np.asarray(enc["overflow_to_sample_mapping"], dtype=np.int64)
    context = np.array([[s == 1 for s in enc.sequence_ids(i)] for i in range(n)], dtype=bool)
    offsets = np.asarray(enc["offset_mapping"], dtype=np.int32).reshape(n, max_length, 2)
    offsets = np.where(context[..., None], offsets, -1).astype(np.int32)
    cls = getattr(tokenizer, "cls_token_id", None)
    if n and (cls is None or not (ids[:, 0] == cls).all()):
        raise DataError("span windows need a tokenizer that starts every (question, context) "
                        "pair with its CLS token (position 0 is the 'no answer' position); this "
                        "tokenizer does not: use a BERT/RoBERTa-style tokenizer")
    if n and not context.any(axis=1).all():
        bad = int(example[np.flatnonzero(~context.any(axis=1))[0]])
        raise DataError(f"question {examples[bad].id!r}: its context gives no tokens (empty or "
                        "only characters the tokenizer drops); give a context with text")
    valid = context.copy()
    valid[:, 0] = True
    y = np.array([_label(examples[int(e)], offsets[i], context[i])
                  for i, e in enumerate(example)], dtype=np.int64).reshape(n, 2)
    x = np.ascontiguousarray(np.stack([ids, attention, types], axis=1))
    return Windows(x=x, y=y, valid=valid, offsets=offsets, example=example)


def _label(ex: SquadExample, offsets: np.ndarray, context: np.ndarray) -> tuple[int, int]:
    """Start and end token of the first answer if wholly inside this window, else (0, 0)."""
    if ex.is_impossible:
        return 0, 0
    text, start_char = ex.answers[0]
    end_char = start_char + len(text)
    positions = np.flatnonzero(context)
    first, last = positions[0], positions[-1]
    if not (offsets[first, 0] <= start_char and offsets[last, 1] >= end_char):
        return 0, 0
    starts = positions[offsets[positions, 1] > start_char]  # tokens ending after the start
    ends = positions[offsets[positions, 0] < end_char]  # tokens beginning before the end
    if not len(starts) or not len(ends) or starts[0] > ends[-1]:
        return 0, 0  # no token covers the answer's characters (e.g. only whitespace)
    return int(starts[0]), int(ends[-1])


def spans_to_text(windows: Windows, examples: Sequence[SquadExample], rows: Sequence[int] |
                  np.ndarray, starts: Sequence[int] | np.ndarray,
                  ends: Sequence[int] | np.ndarray) -> list[str]:
    """The context text of token spans ``[start, end]`` of windows ``rows``.

    ``context[offsets[row, start, 0] : offsets[row, end, 1]]`` of the row's question; a
    span at position 0 (no answer), or one that is not a context span with end >= start,
    gives ''.
    """
    texts = []
    for row, start, end in zip(rows, starts, ends, strict=True):
        begin, stop = windows.offsets[row, start, 0], windows.offsets[row, end, 1]
        if start == 0 or end < start or begin < 0 or stop < 0:
            texts.append("")
            continue
        texts.append(examples[int(windows.example[row])].context[begin:stop])
    return texts
