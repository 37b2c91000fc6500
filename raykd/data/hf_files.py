"""The files of a Hugging Face folder, read once through checked opens into a private copy.

A ``name: hf`` model's ``path`` and ``tokenizer`` are a local folder or
``package:<module>/<dir>``, a folder shipped inside an installed Python package:

- ``package:<module>/<dir>``: the package's folder is found with
  ``importlib.util.find_spec(<module>)`` (nothing is imported but its parent packages);
  every file read, once its links are followed, must lie inside that folder.
- a plain folder: listed and read as data files are (:mod:`raykd.data.paths`): inside
  ``RAYKD_DATA_ROOTS`` when that is set, never ``/proc`` nor a ``.service`` directory.

Only the files in :data:`MODEL_FILES` / :data:`TOKENIZER_FILES` are read, each through one
checked descriptor, and copied into a private temporary folder (mode 0700) from which
``transformers`` loads (``local_files_only``, no remote code, safetensors only): nothing is
read again by path later, so a folder changed after the check is never half-read.
:func:`files_digest` is the sha256 of what was read (names, sizes, bytes), the model's
content identity in caches. Imports no transformers and no torch: the span windows
(:mod:`raykd.data.tokenizers`) read their tokenizer through it, and ``raykd.models`` its
models.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from raykd.core.errors import ModelError
from raykd.core.spec import check_hf_config
from raykd.data.checks import DataError
from raykd.data.paths import OPEN_FLAGS, _opened_path, list_dir, open_data

CONFIG = "config.json"
WEIGHTS = "model.safetensors"
TOKENIZER = "tokenizer.json"
TOKENIZER_FILES = (TOKENIZER, "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")
"""Read from a tokenizer folder (``tokenizer.json`` required: a fast tokenizer)."""
MODEL_FILES = (CONFIG, WEIGHTS)
"""Read from a pretrained model folder besides its tokenizer files (both required)."""
CHUNK = 1 << 20
LOAD = {"local_files_only": True, "trust_remote_code": False}
"""How ``transformers`` loads from the private copy: its files only, no remote code."""
_DIGESTS: dict[tuple[int, ...], str] = {}
"""sha256 of a file already read in this process, by (device, inode, size, mtime_ns, ctime_ns)."""


class HFModelError(ModelError):
    """A Hugging Face folder or config raykd does not load; the message names the file."""


@dataclass
class Folder:
    """A ``path``/``tokenizer`` value resolved: where its files are and how they are checked."""

    given: str
    path: Path
    inside: Path | None = None
    """The package's real folder (``package:`` values), which every file must lie in; None for
    a plain folder, checked against the data roots instead."""
    names: list[str] = field(default_factory=list)


def resolve_folder(value: str, field_name: str) -> Folder:
    """The folder ``value`` names, listed (its entries' names only)."""
    if not value.startswith("package:"):
        folder = Folder(value, Path(value).expanduser())
        try:
            folder.names = [p.name for p in list_dir(folder.path, f"{field_name} folder")]
        except DataError as err:
            raise HFModelError(f"{err}; expected a local Hugging Face folder (config.json, "
                               "model.safetensors, tokenizer.json) or 'package:<module>/<dir>'"
                               ) from None
        return folder
    module, _, sub = value[len("package:"):].partition("/")
    if not module.isidentifier():  # find_spec of a dotted name would import its parents
        raise HFModelError(f"{field_name}={value!r}: expected 'package:<top-level package>/<dir>'")
    try:
        found = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        found = None
    places = list(getattr(found, "submodule_search_locations", None) or [])
    if found is None or not places:
        raise HFModelError(f"{field_name}={value!r}: no installed package {module!r} here; "
                           "install the package that ships the folder, or give a local folder")
    root = Path(os.path.realpath(places[0]))
    path = Path(os.path.realpath(root / sub))
    if not path.is_relative_to(root) or not path.is_dir():
        raise HFModelError(f"{field_name}={value!r}: package {module!r} has no folder {sub!r} "
                           f"(inside {str(root)!r})")
    return Folder(value, path, inside=root, names=sorted(os.listdir(path)))


def _open(folder: Folder, name: str) -> BinaryIO:
    """``folder/name`` opened through one checked descriptor (data roots, or the package)."""
    where = f"{folder.given}/{name}"
    if folder.inside is None:
        try:
            return open_data(folder.path / name, "hf model file")
        except DataError as err:
            raise HFModelError(str(err)) from None
    try:
        fd = os.open(folder.path / name, os.O_RDONLY | OPEN_FLAGS)
    except OSError as err:
        raise HFModelError(f"{where} could not be opened ({err.strerror})") from None
    try:
        real = _opened_path(fd, folder.path / name)
        if not real.is_relative_to(folder.inside) or not stat.S_ISREG(os.fstat(fd).st_mode):
            raise HFModelError(f"{where}: not a file inside the package's folder "
                               f"{str(folder.inside)!r}; it may not be read")
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return os.fdopen(fd, "rb")


def _read(folder: Folder, name: str, copy_to: Path | None) -> str:
    """sha256 of ``folder/name`` (cached by the opened file's identity), copied into
    ``copy_to`` when given (then always read)."""
    with _open(folder, name) as handle:
        st = os.fstat(handle.fileno())
        key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        if copy_to is None and key in _DIGESTS:
            return _DIGESTS[key]
        h = hashlib.sha256()
        with open(copy_to / name, "wb") if copy_to is not None else _null() as out:
            while chunk := handle.read(CHUNK):
                h.update(chunk)
                if out is not None:
                    out.write(chunk)
    _DIGESTS[key] = h.hexdigest()
    return _DIGESTS[key]


@contextmanager
def _null() -> Iterator[None]:
    yield None


def needed(folder: Folder, field_name: str, *, model: bool, tokenizer: bool) -> list[str]:
    """The names to read from ``folder``: with ``model`` its config and weights, with
    ``tokenizer`` its tokenizer files. HFModelError naming the folder and what is accepted
    when a required one is missing."""
    names = set(folder.names)
    where = f"{field_name} folder {folder.given!r}"
    if model and CONFIG not in names:
        raise HFModelError(f"{where} has no config.json; expected a Hugging Face model folder "
                           "(config.json, model.safetensors, tokenizer.json)")
    if model and WEIGHTS not in names:
        raise HFModelError(_no_weights(where, names))
    if tokenizer and TOKENIZER not in names:
        raise HFModelError(f"{where} has no tokenizer.json; a fast tokenizer is required (save "
                           "one with a fast tokenizer's save_pretrained, or give tokenizer: "
                           "another folder)")
    wanted = (MODEL_FILES if model else ()) + (TOKENIZER_FILES if tokenizer else ())
    return [n for n in wanted if n in names]


def _no_weights(where: str, names: set[str]) -> str:
    if "pytorch_model.bin" in names:
        return (f"{where}/pytorch_model.bin is refused: raykd loads weights only from "
                "model.safetensors (a pickle can run code); convert it to model.safetensors "
                "(e.g. save_pretrained with safetensors)")
    if "model.safetensors.index.json" in names:
        return (f"{where} holds sharded weights (model.safetensors.index.json); raykd loads one "
                "model.safetensors file")
    return f"{where} has no model.safetensors; expected the weights as model.safetensors"


@dataclass
class LocalCopy:
    """The files read, copied under ``dir`` (model files and tokenizer files may share it)."""

    dir: Path
    config: dict[str, Any] | None
    """The pretrained config.json (checked), None for a model built from a config mapping."""
    digest: str
    """:func:`files_digest` of the files copied."""
    tokenizer_digest: str
    """The same over the tokenizer's files only."""


def _sources(config: Mapping[str, Any]) -> list[tuple[Folder, list[str], str]]:
    """(folder, names to read, field) of a model entry: its ``path`` (model and tokenizer files,
    the tokenizer's from ``tokenizer`` when given) or its ``tokenizer`` alone."""
    out = []
    path, tok = config.get("path"), config.get("tokenizer")
    if path is not None:
        folder = resolve_folder(str(path), "path")
        out.append((folder, needed(folder, "path", model=True, tokenizer=tok is None), "path"))
    if tok is not None:
        folder = resolve_folder(str(tok), "tokenizer")
        out.append((folder, needed(folder, "tokenizer", model=False, tokenizer=True),
                    "tokenizer"))
    if not out:
        raise HFModelError("name 'hf' needs path (a pretrained folder) or config and tokenizer")
    return out


def _digest(parts: list[tuple[str, str, str]]) -> str:
    text = json.dumps(sorted(parts), separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def files_digest(config: Mapping[str, Any]) -> str:
    """sha256 over (field, file name, sha256 of its bytes) of every file a build of ``config``
    reads: a changed folder at the same path is another model."""
    return _digest([(f, n, _read(folder, n, None))
                    for folder, names, f in _sources(config) for n in names])


@contextmanager
def local_copy(config: Mapping[str, Any]) -> Iterator[LocalCopy]:
    """The files of ``config``'s folders copied into a private temporary folder (0700),
    removed on exit; config.json parsed and checked (known model_type, no remote code)."""
    tmp = Path(tempfile.mkdtemp(prefix="raykd-hf-"))
    try:
        os.chmod(tmp, 0o700)
        parts = [(f, n, _read(folder, n, tmp))
                 for folder, names, f in _sources(config) for n in names]
        pretrained = None
        if config.get("path") is not None:
            pretrained = _checked_config(tmp / CONFIG, f"{config['path']}/{CONFIG}")
        tokens = [p for p in parts if p[1] in TOKENIZER_FILES]
        yield LocalCopy(tmp, pretrained, _digest(parts), _digest(tokens))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _checked_config(copy: Path, where: str) -> dict[str, Any]:
    try:
        value = json.loads(copy.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise HFModelError(f"{where} is not JSON ({err}); expected a transformers config") from None
    if not isinstance(value, dict):
        raise HFModelError(f"{where} is not a JSON object; expected a transformers config")
    try:
        check_hf_config(value, where)
    except ValueError as err:
        raise HFModelError(str(err)) from None
    return value


def first_line(err: BaseException) -> str:
    """The first line of an error's message (its type's name when it has none)."""
    return (str(err).splitlines() or [type(err).__name__])[0]
