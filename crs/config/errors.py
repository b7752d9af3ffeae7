"""The one exception a bad configuration raises."""

from __future__ import annotations


class ConfigError(ValueError):
    """A problem in the user's configuration; the message says what to change."""
