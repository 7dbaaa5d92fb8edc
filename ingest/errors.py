"""The one exception type of the ingest stage."""

from __future__ import annotations

__all__ = ["IngestError"]


class IngestError(Exception):
    """Bad input or options; the message names the file, cell, gene or flag and says what to do."""
