"""The root of cellshard's exceptions and the shard stage's own.

Every error a user can cause is a ``CellshardError``: one subclass per stage (``ShardError`` here,
``ingest.IngestError``, ``training.ConfigError``), each with a message that names the file, cell,
option or key and says what to do. The command-line tools print such an error as one line and exit 1;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

__all__ = ["CellshardError", "ShardError"]


class CellshardError(Exception):
    """A problem with the user's input or options, explained in the message."""


class ShardError(CellshardError):
    """A shard set, shard or loader option is unusable; the message names it and says what to do."""
