"""The one exception a model that cannot be resolved or loaded raises."""

from __future__ import annotations


class ModelError(RuntimeError):
    """A model that cannot be resolved or loaded; the message says what to do."""
