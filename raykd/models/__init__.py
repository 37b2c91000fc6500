"""Architecture registry and pickle-free checkpoints."""

from raykd.core.errors import ModelError
from raykd.models.checkpoint import (
    CheckpointError,
    checkpoint_info,
    describe_checkpoint,
    load_checkpoint,
    save_checkpoint,
    weights_hash,
)
from raykd.models.registry import MODELS, build_model

__all__ = [
    "MODELS",
    "CheckpointError",
    "ModelError",
    "build_model",
    "checkpoint_info",
    "describe_checkpoint",
    "load_checkpoint",
    "save_checkpoint",
    "weights_hash",
]
