"""The models' base error: an architecture that cannot be built for the given data.

Its own module so that the registry, the user's models and the Hugging Face files can all
raise it without importing one another.
"""

from __future__ import annotations

from raykd.core.errors import UserError

__all__ = ["ModelError"]


class ModelError(UserError, ValueError):
    """An architecture that cannot be built for the given data."""
