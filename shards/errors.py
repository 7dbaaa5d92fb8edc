"""The one exception type of the shards stage."""

from __future__ import annotations

__all__ = ["ShardError"]


class ShardError(Exception):
    """A shard set, shard or option is unusable; the message names it and says what to do."""
