"""Per-cell metadata columns in batches (``LoaderConfig.obs_columns``).

A window knows where each of its cells lies in the set (``(shard << 32) | cell`` keys), so a batch's
columns are gathered from the shards' metadata tables, read once per shard and column and kept for the
last few shards only: memory stays bounded by the shards a process is reading, never the corpus.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
import torch

__all__ = ["ObsColumns"]


class _Reader(Protocol):
    shards: list[dict[str, Any]]

    def column(self, i: int, name: str) -> np.ndarray: ...


class ObsColumns:
    """``obs(keys)`` → ``{column: values}`` for a batch's cells, in batch order: numeric columns as a
    1-D tensor, others as a list (``None`` where missing or where the cell's shard was skipped)."""

    def __init__(
        self,
        names: Sequence[str],
        reader: _Reader,
        skipped: dict[str, str],
        keep_shards: int = 16,
    ) -> None:
        """``skipped``: the loader's shards skipped after a failed check (by path; their cells get ``None``)."""
        self.names, self._reader, self._skipped = list(names), reader, skipped
        self._tables: OrderedDict[int, dict[str, np.ndarray]] = OrderedDict()
        self.keep_shards = keep_shards

    def _table(self, shard: int) -> dict[str, np.ndarray] | None:
        if self._reader.shards[shard]["path"] in self._skipped:
            return None
        table = self._tables.get(shard)
        if table is None:
            table = {name: self._reader.column(shard, name) for name in self.names}
            self._tables[shard] = table
            while len(self._tables) > self.keep_shards:
                self._tables.popitem(last=False)
        else:
            self._tables.move_to_end(shard)
        return table

    def __call__(self, keys: np.ndarray) -> dict[str, Any]:
        shard, cell = keys >> 32, keys & 0xFFFFFFFF
        values: dict[str, np.ndarray] = {name: np.empty(len(keys), dtype=object) for name in self.names}
        for s in np.unique(shard).tolist():
            at = np.flatnonzero(shard == s)
            table = self._table(int(s))
            for name in self.names:
                values[name][at] = None if table is None else table[name][cell[at]]
        return {name: _as_batch_value(v) for name, v in values.items()}


def _as_batch_value(values: np.ndarray) -> torch.Tensor | list[Any]:
    """A numeric column (no missing value) as a tensor; anything else as a list of Python values."""
    if len(values) and all(isinstance(v, (int, float, np.integer, np.floating)) for v in values):
        kinds = {np.asarray(v).dtype.kind for v in values}
        return torch.from_numpy(np.asarray(values.tolist(), dtype=np.float64 if "f" in kinds else np.int64))
    return [None if v is None or (isinstance(v, float) and np.isnan(v)) else v for v in values.tolist()]
