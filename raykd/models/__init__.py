"""Architecture registry and pickle-free checkpoints."""

from raykd.models.checkpoint import CheckpointError, load_checkpoint, save_checkpoint, weights_hash
from raykd.models.registry import MODELS, ModelError, build_model

__all__ = [
    "MODELS",
    "CheckpointError",
    "ModelError",
    "build_model",
    "load_checkpoint",
    "save_checkpoint",
    "weights_hash",
]
