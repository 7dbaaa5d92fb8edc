"""``runs``: a mix of streams (weights, repeats, ``choose``, ``num_samples``) served as runs of cells.

Each stream contributes its share of the epoch as contiguous runs of its cells from a start drawn per
(seed, epoch, stream): O(shards) to plan, and every cell of a run is read with its neighbours.
"""

from __future__ import annotations

import numpy as np

from ...plan.epoch import EpochPlan
from ...plan.mixing import Stream, run_plan, run_start, stream_counts
from ..config import LoaderConfig
from ..streams import MultiReader
from .base import ModeBase

__all__ = ["Runs"]


class Runs(ModeBase):
    """Drawn epochs without weights or replacement."""

    name = "runs"
    sampled = True

    def __init__(self, reader: MultiReader, streams: list[Stream], config: LoaderConfig) -> None:
        super().__init__(config)
        self.reader = reader
        # checked now, not in a worker: an impossible mix fails at construction
        stream_counts(reader.stream_sizes(), [s.kind() for s in streams], config.num_samples)

    def wanted(self) -> list[int]:
        """Cells each stream contributes to an epoch."""
        reader = self.reader
        return stream_counts(
            reader.stream_sizes(), [s.kind() for s in reader.streams], self.config.num_samples
        ).tolist()

    def plan_epoch(self, epoch: int) -> EpochPlan:
        cfg, reader = self.config, self.reader
        sizes = reader.stream_sizes()
        starts = [run_start(sizes[k], np.random.default_rng([cfg.seed, epoch, 2, k])) for k in range(len(sizes))]
        return run_plan(
            reader.shard_cells, reader.stream_shard_counts(), self.wanted(), starts, seed=cfg.seed, epoch=epoch
        )
