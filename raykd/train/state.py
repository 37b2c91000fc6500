"""A student's training state on disk: what a restarted worker needs to go on exactly.

A state directory (one Ray Train checkpoint) holds:

- ``model.safetensors``: the weights after the last finished epoch (with raykd metadata);
- ``best.safetensors``: the weights of the best-validation epoch so far (the result);
- ``optimizer.pt``: the optimizer's state dict (tensors and numbers only, loaded with
  ``torch.load(weights_only=True)``: no pickle of arbitrary objects);
- ``progress.json``: epochs finished, optimizer steps taken (annealing's schedule), the
  per-epoch history, and the best epoch and its validation accuracy;
- ``manifest.json``, written last: the sha256 of each file above, checked before any of
  them is read, so a truncated or altered state is refused (``CheckpointDamaged``), never
  resumed from. (A state without a manifest, from an older raykd, is read unchecked.)

Random state is not stored: the loop reseeds every epoch from (seed, epoch, rank), so a
resumed epoch draws the same batches, augmentations and dropout masks as an
uninterrupted one would.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from raykd.models import build_model, load_checkpoint, save_checkpoint
from raykd.models.checkpoint import CheckpointDamaged

if TYPE_CHECKING:
    from raykd.train.config import StudentConfig

MODEL_FILE = "model.safetensors"
BEST_FILE = "best.safetensors"
OPTIMIZER_FILE = "optimizer.pt"
PROGRESS_FILE = "progress.json"
MANIFEST_FILE = "manifest.json"


@dataclass
class Progress:
    """How far a student got: the counters a resume needs, and its history."""

    epoch: int = 0
    step: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    best_val: float | None = None
    best_epoch: int = 0

    def improved(self, val_accuracy: float | None) -> bool:
        """Whether ``val_accuracy`` beats the best so far (the first epoch always does)."""
        if self.best_epoch == 0:
            return True
        if val_accuracy is None or math.isnan(val_accuracy):
            return False
        return self.best_val is None or val_accuracy > self.best_val


@dataclass
class TrainState:
    """The live state a reporter may save: the (unwrapped) model, optimizer, best weights."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    progress: Progress
    best_weights: dict[str, torch.Tensor] | None = None
    best_saved: tuple[int, Path, str] | None = None
    """(best epoch, file, sha256) of the last ``best.safetensors`` written for this run:
    a later state with the same best epoch links that file instead of writing it again."""


def save_state(state: TrainState, directory: str | Path, *, config: StudentConfig) -> Path:
    """Write ``state`` into ``directory`` (the files listed in the module docstring).

    The best weights are written only when they changed: the epoch that just improved
    links its ``model.safetensors``, a later one the ``best.safetensors`` of an earlier
    state of the same best epoch (hard links, or a copy where the file system has none;
    every file is written whole and renamed, never changed in place, so a linked file
    stays as it was when its other state is deleted).
    """
    directory = Path(directory)
    meta = config.checkpoint_meta
    digests = {MODEL_FILE: _sha256(save_checkpoint(state.model, directory / MODEL_FILE, **meta))}
    digests[BEST_FILE] = _save_best(state, directory, config, digests[MODEL_FILE])
    torch.save(state.optimizer.state_dict(), directory / OPTIMIZER_FILE)
    (directory / PROGRESS_FILE).write_text(json.dumps(asdict(state.progress)))
    for f in (OPTIMIZER_FILE, PROGRESS_FILE):
        digests[f] = _sha256(directory / f)
    (directory / MANIFEST_FILE).write_text(json.dumps(digests))
    return directory


def _save_best(state: TrainState, directory: Path, config: StudentConfig, model_digest: str) -> str:
    """Write (or link) ``directory/best.safetensors``; its sha256."""
    best_file, progress = directory / BEST_FILE, state.progress
    if state.best_weights is None or progress.best_epoch == progress.epoch:
        source: tuple[Path, str] | None = (directory / MODEL_FILE, model_digest)
    elif state.best_saved is not None and state.best_saved[0] == progress.best_epoch:
        source = state.best_saved[1:]
    else:
        source = None
    if source is None or not _link(source[0], best_file):
        best = build_model(config.model, config.input_shape, config.num_classes)
        best.load_state_dict(state.best_weights or state.model.state_dict())
        source = (best_file, _sha256(save_checkpoint(best, best_file, **config.checkpoint_meta)))
    state.best_saved = (progress.best_epoch, best_file, source[1])
    return source[1]


def _link(src: Path, dst: Path) -> bool:
    """Hard-link (or else copy) ``src`` to ``dst``; False when ``src`` is gone."""
    if not src.is_file():
        return False
    dst.unlink(missing_ok=True)
    try:
        os.link(src, dst)
    except FileNotFoundError:  # deleted meanwhile (the driver prunes superseded states)
        return False
    except OSError:  # no hard links on this file system
        try:
            shutil.copyfile(src, dst)
        except FileNotFoundError:
            return False
    return True


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def check_state(directory: str | Path) -> None:
    """Raise CheckpointDamaged when a file of the state differs from its manifest entry."""
    directory = Path(directory)
    manifest = directory / MANIFEST_FILE
    if not manifest.is_file():
        return
    try:
        expected = json.loads(manifest.read_text())
        bad = [f for f, digest in expected.items()
               if not (directory / f).is_file() or _sha256(directory / f) != digest]
    except (OSError, ValueError, AttributeError) as err:
        raise CheckpointDamaged(f"training state {str(directory)!r}: its manifest is unreadable "
                                f"({err})") from None
    if bad:
        raise CheckpointDamaged(f"training state {str(directory)!r}: {', '.join(bad)} fail their "
                                "checksum (truncated or altered); it cannot be resumed from")


def load_progress(directory: str | Path) -> Progress:
    """The progress recorded in a state directory (checked against its manifest)."""
    check_state(directory)
    return Progress(**json.loads((Path(directory) / PROGRESS_FILE).read_text()))


def restore_state(directory: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer,
                  config: StudentConfig) -> TrainState:
    """Load a state directory into ``model`` and ``optimizer`` (in place); the state."""
    directory = Path(directory)
    progress = load_progress(directory)  # checks the manifest first, once
    shape, classes = config.input_shape, config.num_classes
    saved = load_checkpoint(directory / MODEL_FILE, **config.checkpoint_meta)
    model.load_state_dict(saved.state_dict())
    device = next(model.parameters()).device
    optimizer.load_state_dict(torch.load(directory / OPTIMIZER_FILE, weights_only=True,
                                         map_location=device))
    best = load_checkpoint(directory / BEST_FILE, input_shape=shape, num_classes=classes)
    return TrainState(model=model, optimizer=optimizer, progress=progress,
                      best_weights={k: v.detach().clone() for k, v in best.state_dict().items()})
