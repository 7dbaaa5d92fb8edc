"""The training stage's exception type: a message naming the config key and the fix."""

from __future__ import annotations

from shards.errors import CellshardError

__all__ = ["ConfigError", "first_line"]


class ConfigError(CellshardError, ValueError):
    """Bad training configuration or input; the CLI prints it without a traceback and exits 1."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (library errors from deep calls can run to pages)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
