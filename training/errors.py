"""The training stage's one exception type: a message naming the config key and the fix."""

from __future__ import annotations

__all__ = ["ConfigError"]


class ConfigError(ValueError):
    """Bad training configuration or input; the CLI prints it without a traceback and exits 1."""
