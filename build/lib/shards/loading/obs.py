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
import pandas as pd
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
        if self._reader.shards[shard].path in self._skipped:
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
        parts = [(np.flatnonzero(shard == s), self._table(int(s))) for s in np.unique(shard).tolist()]
        return {name: _gather(name, parts, cell, len(keys)) for name in self.names}


def _gather(name: str, parts: list, cell: np.ndarray, n: int) -> torch.Tensor | list[Any]:
    """One column over the batch: a tensor when every piece is numeric (and no shard was skipped), else a
    list with ``None`` where a value is missing (vectorized per shard, no check per value)."""
    pieces = [(at, None if table is None else table[name][cell[at]]) for at, table in parts]
    if all(v is not None and v.dtype.kind in "iuf" for _, v in pieces):
        kind = np.result_type(*[v.dtype for _, v in pieces])
        out = np.empty(n, dtype=np.float64 if kind.kind == "f" else np.int64)
        for at, v in pieces:
            out[at] = v
        return torch.from_numpy(out)
    out = np.full(n, None, dtype=object)
    for at, v in pieces:
        if v is not None:
            v = v.astype(object)
            v[pd.isna(v)] = None
            out[at] = v
    return out.tolist()
