"""What every section of a job spec shares: frozen, unknown keys refused, and the seed bound."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

__all__ = ["MAX_SEED", "Section"]

MAX_SEED = 2**32 - 1
"""The largest seed a spec accepts (NumPy's seeds are 32-bit)."""


class Section(BaseModel):
    """A part of a job spec: immutable once validated; an unknown key is an error."""

    model_config = ConfigDict(extra="forbid", frozen=True)
