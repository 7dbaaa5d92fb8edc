"""``grouped-bounded`` (``group_by``, the default): batches of one group from a pool of bounded size.

Each worker reads only its own slot's groups, from the shards it serves (no cell's group is held for
the corpus), and plans its batches with ``plan.grouping.bounded_group_batches``: at most
``group_pool_cells`` cells wait; when the pool is full the largest group is topped up from the next (a
mixed batch). Every slot serves the plain batch count, so nothing is read to agree on it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ...plan.epoch import EpochPlan
from ...plan.grouping import GroupedBatches, bounded_group_batches
from ...plan.slots import stream_positions
from ...plan.worker import WorkerPlan
from ..streams import MultiReader
from .base import SamplingMode
from .grouped import Grouped

__all__ = ["DEFAULT_GROUP_POOL", "GroupedBounded"]

#: cells a bounded pool holds when ``group_pool_cells`` is not set (or the batch size, if larger): at 64
#: cells a batch and 1,000 groups, 0.88 of cells sit in a batch of their own group (docs/BENCHMARKS.md)
DEFAULT_GROUP_POOL = 16_384


class GroupedBounded(Grouped):
    """Grouped batches with at most ``pool_cells`` cells waiting."""

    name = "grouped-bounded"

    def __init__(self, inner: SamplingMode, reader: MultiReader) -> None:
        super().__init__(inner, reader)
        self.check_column()
        cfg = self.config
        self.pool_cells = cfg.group_pool_cells or max(DEFAULT_GROUP_POOL, cfg.batch_size)

    def identity(self) -> dict[str, Any]:
        return {**super().identity(), "group_pool_cells": self.pool_cells}

    def batches(self, cells: EpochPlan, worker: WorkerPlan) -> GroupedBatches:
        slot, n = worker.slot, len(worker.seq)
        at = slot.to_sequence(stream_positions(slot, slot.n_cells))
        labels = self.slot_groups(cells, worker.seq[np.where(at >= n, at - n, at) % n])
        return bounded_group_batches(labels, self.config.batch_size, self.pool_cells)

    def slot_groups(self, cells: EpochPlan, positions: np.ndarray) -> np.ndarray:
        """Group codes (local to these cells) of epoch ``positions``: each shard's group column is read
        once, for the shards these positions touch only, and coded per shard (no per-cell strings)."""
        shard, cell, _ = cells.locate(positions)
        out = np.empty(len(positions), dtype=np.int64)
        code: dict[str, int] = {}
        order = np.argsort(shard, kind="stable")
        cuts = np.flatnonzero(np.diff(shard[order])) + 1
        for part in np.split(order, cuts) if len(order) else []:
            at = int(shard[part[0]])
            column = np.asarray(self.reader.column(at, self.config.group_by))
            self.missing(at, column)
            values, inverse = np.unique(column.astype(str), return_inverse=True)
            lut = np.array([code.setdefault(v, len(code)) for v in values.tolist()], dtype=np.int64)
            out[part] = lut[inverse[cell[part]]]
        return out
