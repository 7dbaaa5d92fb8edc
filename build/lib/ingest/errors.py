"""The ingest stage's exception type."""

from __future__ import annotations

from shards.errors import CellshardError

__all__ = ["IngestError"]


class IngestError(CellshardError):
    """Bad input or options; the message names the file, cell, gene or flag and says what to do."""
