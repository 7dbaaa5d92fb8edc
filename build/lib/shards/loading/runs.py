"""Reading one run of a shard's cells for the loader, and what ``on_error="skip"`` does with a shard
that fails a check: the rest of the run, in this process, serves its cells as zero-weight placeholders.
"""

from __future__ import annotations

import logging

import numpy as np

from ..errors import ShardError
from .streams import MultiReader

__all__ = ["RunReader"]

log = logging.getLogger("shards.loading.dataset")  # the name the dataset's warnings always had


class RunReader:
    """``read(shard, start, stop) -> (tokens (2, T), offsets, ids, bad)`` over a ``MultiReader``."""

    def __init__(self, reader: MultiReader, on_error: str) -> None:
        self.reader, self.on_error = reader, on_error
        self.skipped_cells = 0
        self.skipped_shards: dict[str, str] = {}

    def read(self, shard: int, start: int, stop: int):
        """One run of cells. A shard that fails a check raises (``on_error="raise"``), or with
        ``on_error="skip"`` is skipped from then on in this process: its runs become empty cells of zero
        loss weight (so every rank still yields the same number of batches), with one warning per
        shard and the ``skipped_cells`` / ``skipped_shards`` counters."""
        path = self.reader.shards[shard].path
        if path not in self.skipped_shards:
            try:
                genes, counts, offsets, ids = self.reader.read(shard, start, stop)
                return np.stack([genes, counts]), offsets, ids, np.zeros(stop - start, dtype=bool)
            except ShardError as exc:
                if self.on_error == "raise":
                    raise
                self.skipped_shards[path] = str(exc)
                log.warning(
                    "skipping shard %s for the rest of this run (%s); on_error='skip' serves its cells "
                    "as zero-weight placeholders",
                    path,
                    exc,
                )
        self.skipped_cells += stop - start
        ids = np.array([f"skipped:{path}:{i}" for i in range(start, stop)], dtype=object)
        empty = np.zeros((2, 0), np.int32)
        return empty, np.zeros(stop - start + 1, np.int64), ids, np.ones(stop - start, dtype=bool)
