"""``DistributedShardSampler``: the plan as an object, to inspect a job's partitioning without reading a byte.

The plan of an epoch is a function of (per-shard cell counts, world size, number of workers, batch size,
seed, epoch, remainder policy) only, so every rank and worker computes its own part without talking to
the others, and tests can check every rank of every epoch in one process.
"""

from __future__ import annotations

import numpy as np

from .epoch import plan_epoch
from .slots import check_world, plan_slots, stream_positions

__all__ = ["DistributedShardSampler"]


class DistributedShardSampler:
    """The plan as an object: which cell ranges a (rank, worker) reads in an epoch, and in what order.

    A thin, picklable face over the pure functions above (``ShardedCellDataset`` uses them directly);
    handy to inspect or test a job's partitioning without reading a byte.
    """

    def __init__(
        self,
        shard_cells: np.ndarray,
        *,
        batch_size: int,
        seed: int = 0,
        remainder: str = "drop",
        cell_tokens: list[np.ndarray] | None = None,
        lanes: int = 4,
        lane_cells: int = 256,
    ) -> None:
        self.shard_cells = np.asarray(shard_cells, dtype=np.int64)
        self.cell_tokens = cell_tokens  # per shard, per cell: enables balancing by tokens
        self.batch_size, self.seed, self.remainder = batch_size, seed, remainder
        self.lanes, self.lane_cells = lanes, lane_cells
        check_world(1, 0, batch_size, remainder, lanes, lane_cells)

    def ranges(
        self, *, world_size: int, rank: int, num_workers: int, worker_id: int, epoch: int
    ) -> list[tuple[int, int, int, bool]]:
        """``(shard, start, stop, is_pad)`` runs in serving order for one (rank, worker) in ``epoch``."""
        if not 0 <= rank < world_size or not 0 <= worker_id < max(num_workers, 1):
            raise ValueError(f"rank {rank} / worker {worker_id} outside world {world_size} x {num_workers} workers")
        world = {"world_size": world_size, "num_workers": num_workers, "batch_size": self.batch_size}
        options = {
            **world,
            "seed": self.seed,
            "epoch": epoch,
            "policy": self.remainder,
            "lanes": self.lanes,
            "lane_cells": self.lane_cells,
        }
        plan, slots = plan_epoch(self.shard_cells, **options)
        if self.cell_tokens is not None:  # balanced by tokens: the same sequence, other spans
            tokens = np.concatenate([np.asarray(self.cell_tokens[i], dtype=np.int64) for i in plan.shard_order])
            slots = plan_slots(plan.n_cells, **options, tokens=tokens)
        slot = slots[rank * max(num_workers, 1) + worker_id]
        pos = slot.to_sequence(stream_positions(slot, slot.n_cells))
        shard, cell, pad = plan.locate(pos)
        runs = np.flatnonzero((np.diff(shard) != 0) | (np.diff(cell) != 1) | (np.diff(pad) != 0)) + 1
        return (
            [
                (int(shard[a]), int(cell[a]), int(cell[b - 1]) + 1, bool(pad[a]))
                for a, b in zip(np.r_[0, runs], np.r_[runs, len(pos)], strict=True)
            ]
            if len(pos)
            else []
        )
