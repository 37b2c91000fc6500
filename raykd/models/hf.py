"""Hugging Face transformers as raykd teachers and students (``name: hf``).

Two heads, chosen by the data's per-example shape ``input_shape``:

- **Text classification**, ``(P, W)`` with ``P`` in (1, 2): :class:`TextClassifier` takes the
  raw UTF-8 bytes ``(B, P, W)`` (:mod:`raykd.data.text_bytes`), decodes each row, tokenizes
  it with its own tokenizer (pairs when ``P == 2``; at most ``max_length`` tokens, padded to
  the batch's longest) and returns float32 logits ``(B, C)`` of
  ``AutoModelForSequenceClassification``. Each text is first cut to
  ``CHARS_PER_TOKEN * max_length`` characters, which bounds the tokenizer's work on long
  documents and leaves the tokens kept as they are unless a text averages more than
  ``CHARS_PER_TOKEN`` characters per token.
- **Span extraction**, ``(3, L)``: :class:`SpanModel` takes int64 ``(B, 3, L)`` =
  ``[input_ids, attention_mask, token_type_ids]`` (windows of one shared tokenizer) and
  returns float32 start/end logits ``(B, 2, L)`` of ``AutoModelForQuestionAnswering``.

The model comes from a pretrained folder (``path``; ``num_hidden_layers`` keeps its first N
layers; a new head when the folder has none) or from a ``config`` mapping with a
``tokenizer`` folder (fresh weights from torch's RNG: the caller seeds it). Folders are read
once into a private copy (:mod:`raykd.data.hf_files`); ``transformers`` loads only from
there, with ``local_files_only=True``, ``trust_remote_code=False``, safetensors only
(:mod:`raykd.models.hf_build`: building a model; :mod:`raykd.data.tokenizers`: reading a
tokenizer).
On CUDA the forward pass runs under ``torch.autocast`` (bf16 where supported, else fp16);
fp32 on CPU. The weights stay fp32.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from raykd.data.hf_files import LOAD, HFModelError, first_line
from raykd.data.text_bytes import decode_batch
from raykd.data.tokenizers import quiet_transformers

__all__ = ["CHARS_PER_TOKEN", "LOAD", "POSITION_OFFSET", "SPAN_SHAPES", "TOKEN_INPUTS",
           "HFModelError", "HFWrapper", "SpanModel", "TextClassifier", "first_line", "hf_wrapper",
           "model_inputs", "quiet_transformers", "save_hf_folder", "save_tokenizer"]

CHARS_PER_TOKEN = 16
"""Characters kept per token of ``max_length`` before tokenizing (see the module docstring)."""
TOKEN_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
"""The tensors a transformer may read, in this order: a span window's rows, and the inputs
of an exported ONNX graph (those its forward takes)."""
SPAN_ROWS = len(TOKEN_INPUTS)
"""Rows of a span window the model reads: input_ids, attention_mask, token_type_ids."""
SPAN_SHAPES = (SPAN_ROWS, SPAN_ROWS + 1)
"""Rows of a span window given to a model: the three it reads, plus (4) the valid mask."""
POSITION_OFFSET = {"roberta": 2, "xlm-roberta": 2}
"""Positions an architecture uses besides the tokens (RoBERTa numbers from padding_idx + 1)."""


def amp_dtype(device: torch.device) -> torch.dtype | None:
    """The autocast dtype on ``device``: bf16 on a CUDA device that supports it, else fp16;
    None (fp32) elsewhere."""
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


class HFWrapper(nn.Module):
    """A transformers model ``.hf`` with its tokenizer; the sha256 of the tokenizer's files is
    a buffer, so a checkpoint never loads beside another tokenizer."""

    def __init__(self, model: nn.Module, tokenizer: Any, max_length: int, tokenizer_sha256: str):
        super().__init__()
        self.hf = model
        self.tokenizer = tokenizer
        self.max_length = int(max_length)
        self.register_buffer("tokenizer_sha256", _digest_tensor(tokenizer_sha256))
        accepted = inspect.signature(model.forward).parameters
        self.input_names = [k for k in TOKEN_INPUTS if k in accepted]
        """The :data:`TOKEN_INPUTS` this transformer's forward takes, in that order."""

    def model_inputs(self, x: torch.Tensor | np.ndarray) -> dict[str, torch.Tensor]:
        """The keyword tensors (int64, on the CPU) the transformer receives for the batch
        ``x`` in :meth:`forward`: one entry per :attr:`input_names`."""
        raise NotImplementedError

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True,
                        assign: bool = False) -> Any:
        """``nn.Module.load_state_dict``, refused when the state was made with other
        tokenizer files than this model's."""
        stored = state_dict.get("tokenizer_sha256")
        if stored is not None and not torch.equal(stored.cpu(), self.tokenizer_sha256.cpu()):
            raise HFModelError(
                f"these weights were trained with tokenizer files of sha256 "
                f"{bytes(stored.cpu().numpy()).hex()[:16]}..., this model's tokenizer has "
                f"{bytes(self.tokenizer_sha256.cpu().numpy()).hex()[:16]}...; give the "
                "tokenizer folder they were trained with")
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    @property
    def device(self) -> torch.device:
        return self.tokenizer_sha256.device

    def _run(self, inputs: dict[str, torch.Tensor]) -> Any:
        """The transformers forward on ``inputs`` (autocast on CUDA: bf16, or fp16 for
        inference only: fp16 training would need loss scaling, so it runs fp32)."""
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        dtype = amp_dtype(self.device)
        if dtype == torch.float16 and self.training and torch.is_grad_enabled():
            dtype = None
        if dtype is None:
            return self.hf(**inputs)
        with torch.autocast(device_type=self.device.type, dtype=dtype):
            return self.hf(**inputs)


MEMO_TOKENS = 16_000_000
"""Most tokens a text model keeps memoized (about 200 MB of int32 ids, mask and types)."""


class TextClassifier(HFWrapper):
    """Raw UTF-8 bytes ``(B, P, W)`` -> float32 logits ``(B, C)`` (see the module docstring).

    Tokenization is memoized per row: the key is the BLAKE2b-128 digest of the row's whole
    bytes (every slot, padding included), the value the row's unpadded token arrays, so a
    student that sees the same texts every epoch tokenizes each once; a batch is then padded
    to its longest row exactly as the tokenizer pads (its pad id, pad token type, side).
    The memo is emptied when it holds :data:`MEMO_TOKENS` tokens.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._memo: dict[bytes, dict[str, np.ndarray]] = {}
        self._memo_tokens = 0

    def _encode(self, rows: np.ndarray) -> list[dict[str, np.ndarray]]:
        """Each row's unpadded token arrays (decoded, cut, tokenized with truncation)."""
        cut = CHARS_PER_TOKEN * self.max_length
        texts = [[t[:cut] for t in row] for row in decode_batch(rows.astype(np.uint8))]
        pair = [row[1] for row in texts] if rows.shape[1] == 2 else None
        enc = self.tokenizer([row[0] for row in texts], pair, truncation=True,
                             max_length=self.max_length, padding=False)
        names = [k for k in TOKEN_INPUTS if k in enc]
        return [{k: np.asarray(enc[k][i], dtype=np.int64) for k in names}
                for i in range(len(rows))]

    def _pad(self, rows: list[dict[str, np.ndarray]]) -> dict[str, torch.Tensor]:
        """Rows padded to the longest, as the tokenizer's ``padding=True`` pads them."""
        longest = max(len(r["input_ids"]) for r in rows)
        fill = {"input_ids": self.tokenizer.pad_token_id, "attention_mask": 0,
                "token_type_ids": getattr(self.tokenizer, "pad_token_type_id", 0)}
        left = getattr(self.tokenizer, "padding_side", "right") == "left"
        out = {}
        for name in rows[0]:
            batch = np.full((len(rows), longest), fill[name], dtype=np.int64)
            for i, r in enumerate(rows):
                n = len(r[name])
                if left:
                    batch[i, longest - n:] = r[name]
                else:
                    batch[i, :n] = r[name]
            out[name] = torch.from_numpy(batch)
        return out

    def tokenize(self, x: torch.Tensor | np.ndarray) -> dict[str, torch.Tensor]:
        """The tokenizer's tensors for a byte batch ``(B, P, W)`` (memoized per row)."""
        import hashlib

        rows = np.asarray(x.detach().cpu() if isinstance(x, torch.Tensor) else x)
        if rows.ndim != 3 or rows.shape[1] not in (1, 2):
            raise HFModelError(f"text model expects bytes of shape (batch, 1 or 2, width), got "
                               f"{tuple(rows.shape)}")
        rows = np.ascontiguousarray(rows, dtype=np.uint8)
        keys = [hashlib.blake2b(r.tobytes(), digest_size=16).digest() for r in rows]
        missing = [i for i, k in enumerate(keys) if k not in self._memo]
        if missing:
            if self._memo_tokens > MEMO_TOKENS:
                self._memo.clear()
                self._memo_tokens = 0
            for i, encoded in zip(missing, self._encode(rows[missing]), strict=True):
                self._memo[keys[i]] = encoded
                self._memo_tokens += len(encoded["input_ids"])
        return self._pad([self._memo[k] for k in keys])

    def model_inputs(self, x: torch.Tensor | np.ndarray) -> dict[str, torch.Tensor]:
        """:meth:`tokenize`'s tensors that the transformer takes (the bytes' tokens: decoded,
        cut to ``CHARS_PER_TOKEN * max_length`` characters, truncated to ``max_length``
        tokens, padded to the batch's longest)."""
        tokens = self.tokenize(x)
        return {k: tokens[k] for k in self.input_names if k in tokens}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] == 0:
            return torch.zeros((0, self.hf.config.num_labels), device=self.device)
        return self._run(self.model_inputs(x)).logits.float()


class SpanModel(HFWrapper):
    """Token windows int64 ``(B, 4, L)`` (input_ids, attention_mask, token_type_ids, valid:
    :mod:`raykd.data.span_data`; ``(B, 3, L)`` without the valid row) -> float32 start/end
    logits ``(B, 2, L)``. The valid row is not read here: the losses and the evaluation
    mask with it."""

    def model_inputs(self, x: torch.Tensor | np.ndarray) -> dict[str, torch.Tensor]:
        """The window's rows (:data:`TOKEN_INPUTS`, in order) that the transformer takes."""
        if x.ndim != 3 or x.shape[1] not in SPAN_SHAPES:
            raise HFModelError(f"span model expects (batch, 3 or 4, length) token windows, got "
                               f"{tuple(x.shape)}")
        rows = torch.as_tensor(x).long()
        return {k: rows[:, i] for i, k in enumerate(TOKEN_INPUTS) if k in self.input_names}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self._run(self.model_inputs(x))
        return torch.stack([out.start_logits, out.end_logits], dim=1).float()


def hf_wrapper(model: nn.Module, needed_by: str = "this") -> HFWrapper:
    """The :class:`TextClassifier` or :class:`SpanModel` of ``model`` (itself, or the one in
    ``.module`` of a DDP wrapper); HFModelError naming ``needed_by`` for any other model."""
    inner = getattr(model, "module", model)
    if not isinstance(inner, HFWrapper):
        raise HFModelError(f"{needed_by} needs a name 'hf' model, got {type(inner).__name__}")
    return inner


def model_inputs(model: nn.Module, x: torch.Tensor | np.ndarray) -> dict[str, torch.Tensor]:
    """The keyword tensors (int64, CPU) the transformer of ``model`` receives for the batch
    ``x`` (text bytes ``(B, P, W)`` or span windows ``(B, 3|4, L)``) in its training and
    evaluation forward. The one definition of a name-hf model's preprocessing: predict and
    the ONNX export feed exactly these, so they cannot drift from training."""
    return hf_wrapper(model, "model_inputs").model_inputs(x)


def save_tokenizer(model: nn.Module, out_dir: str | Path, max_length: int | None = None) -> Path:
    """Write the tokenizer of a name-hf model so that ``AutoTokenizer.from_pretrained(out_dir)``
    cuts where raykd cuts: a copy whose ``model_max_length`` is ``max_length`` (default the
    model's; for a span model give the job's window length, ``data.max_length``), so
    ``truncation=True`` without a ``max_length`` keeps that many tokens. A span model's copy
    also pads and truncates on the right, as :func:`raykd.data.windows.make_windows` does. The
    model's own tokenizer is not changed."""
    import copy

    inner = hf_wrapper(model, "save_tokenizer")
    saved = copy.deepcopy(inner.tokenizer)
    saved.model_max_length = int(inner.max_length if max_length is None else max_length)
    if isinstance(inner, SpanModel):
        saved.padding_side, saved.truncation_side = "right", "right"
    with quiet_transformers():
        saved.save_pretrained(str(out_dir))
    return Path(out_dir)


def save_hf_folder(model: nn.Module, out_dir: str | Path,
                   class_names: Sequence[str] | None = None, max_length: int | None = None,
                   null_threshold: float | None = None) -> Path:
    """Write ``model`` (a :class:`TextClassifier` or :class:`SpanModel`, or a wrapper of one
    in ``.module``) as a Hugging Face folder: ``config.json`` (``id2label``/``label2id`` from
    ``class_names``), ``model.safetensors`` and the tokenizer (:func:`save_tokenizer`, with
    ``max_length``), which ``AutoModelFor...from_pretrained(out_dir)`` and
    ``AutoTokenizer.from_pretrained(out_dir)`` load without raykd. A span student's no-answer
    threshold (chosen on val: answer '' when ``null score - best span score`` exceeds it) goes
    into ``config.json`` as ``raykd_null_threshold``, so the folder alone answers as scored."""
    inner = hf_wrapper(model, "save_hf_folder")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    hf_config = inner.hf.config
    if class_names is not None:
        if len(class_names) != hf_config.num_labels:
            raise HFModelError(f"{len(class_names)} class names given for a head of "
                               f"{hf_config.num_labels} labels")
        hf_config.id2label = {i: str(n) for i, n in enumerate(class_names)}
        hf_config.label2id = {str(n): i for i, n in enumerate(class_names)}
    if null_threshold is not None:
        hf_config.raykd_null_threshold = float(null_threshold)
    with quiet_transformers():
        inner.hf.save_pretrained(out)
    save_tokenizer(inner, out, max_length)
    return out


def _digest_tensor(hexdigest: str) -> torch.Tensor:
    return torch.tensor(list(bytes.fromhex(hexdigest)), dtype=torch.uint8)
