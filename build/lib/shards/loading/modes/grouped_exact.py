"""``grouped-exact`` (``group_by`` with ``group_exact: true``): every batch holds cells of one group.

The schedule needs every cell's group in every loader process (``plan.grouping.slot_groups`` equalizes
the batch counts over all slots): O(cells) memory and time per process (measured at 160M cells: 50 s and
11.7 GB to plan), and each group's last batch in every slot is padded or dropped. The bounded pool
(``grouped_bounded``, the default for ``group_by``) avoids both at the price of a few mixed batches.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import torch

from ...plan.epoch import EpochPlan
from ...plan.grouping import GroupedBatches, slot_groups
from ...plan.worker import WorkerPlan
from ..streams import MultiReader
from .base import SamplingMode
from .grouped import Grouped

__all__ = ["LARGE_EXACT_GROUPS", "GroupedExact"]

LARGE_EXACT_GROUPS = 10_000_000  # cells: past this, exact grouped batches warn (memory per process, pads)


class GroupedExact(Grouped):
    """One group per batch, equal batch counts over the slots (``remainder`` pads or drops)."""

    name = "grouped-exact"

    def __init__(self, inner: SamplingMode, reader: MultiReader) -> None:
        super().__init__(inner, reader)
        n = int(sum(reader.stream_sizes()))
        if n > LARGE_EXACT_GROUPS:
            warnings.warn(
                f"group_by={self.config.group_by!r} with group_exact over {n:,} cells: the exact schedule holds "
                f"every cell's group in every loader process (~{4 * n / 2**20:,.0f} MB each) and pads every "
                "group's last batch in every slot; leave group_exact off for the bounded pool (group_pool_cells)",
                stacklevel=4,
            )
        self.codes, self.values = self._codes()
        self._gathered: tuple[EpochPlan, np.ndarray] | None = None

    def _codes(self) -> tuple[torch.Tensor, list[str]]:
        """Every cell's group as a code (all streams, shard after shard), and the values; in shared memory,
        so spawned workers get them without a copy or a re-read."""
        reader, column = self.reader, self.config.group_by
        per_shard = [reader.column(i, column) for i in range(len(reader.shards))]
        for i, values in enumerate(per_shard):
            self.missing(i, values)
        values = np.concatenate(per_shard)
        codes, uniques = pd.factorize(values.astype(str), sort=True)
        return torch.from_numpy(codes.astype(np.int32)).share_memory_(), [str(u) for u in uniques]

    def shard_groups(self, shard: int) -> np.ndarray:
        """The group codes of one shard's cells."""
        starts = self.reader.cell_starts
        return self.codes.numpy()[starts[shard] : starts[shard + 1]]

    def _epoch_codes(self, cells: EpochPlan) -> np.ndarray:
        """Every epoch position's group code (kept for the last plan: each worker role asks again)."""
        if self._gathered is None or self._gathered[0] is not cells:
            self._gathered = (cells, cells.gather(self.shard_groups))
        return self._gathered[1]

    def batches(self, cells: EpochPlan, worker: WorkerPlan) -> GroupedBatches:
        cfg = self.config
        codes = self._epoch_codes(cells)
        return slot_groups(codes, worker.seq, worker.slots, worker.index, cfg.batch_size, cfg.remainder)

    def n_batches(self, cells: EpochPlan, worker: WorkerPlan) -> int:
        return self.batches(cells, worker).n_batches
