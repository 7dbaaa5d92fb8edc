"""What the two grouped modes share: they wrap a cell-choosing mode and serve their own batches.

A grouped mode keeps its inner mode's epoch (``plan_epoch``: plain, runs or weighted) and replaces the
batches: ``batches(cells, worker)`` gives the worker's ``GroupedBatches`` (pure, ``plan.grouping``), and
the cells wait in the pool (``loading.pool``) until the batch that takes them is served.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ...errors import ShardError
from ...plan.epoch import EpochPlan
from ...plan.grouping import GroupedBatches
from ...plan.worker import WorkerPlan
from .. import pool
from ..streams import MultiReader
from ..windows import Window
from .base import ModeBase, SamplingMode, Served

__all__ = ["Grouped", "GroupedSchedule"]


@dataclass(frozen=True)
class GroupedSchedule:
    """A worker's grouped batches from its start on, served from the pool."""

    worker: WorkerPlan
    batches: GroupedBatches

    @property
    def n_batches(self) -> int:
        return self.batches.n_batches

    @property
    def first_window(self) -> int:
        if self.worker.start >= self.n_batches:
            return self.worker.slot.n_windows
        return pool.first_window(self.worker.slot, self.batches, self.worker.start)

    @property
    def last_needed(self) -> int:
        ready = self.batches.ready[self.worker.start :]
        return int(ready.max()) if len(ready) else -1  # a batch is served once its last cell is read

    def serve(self, read: Callable[[int], Window]) -> Iterator[Served]:
        yield from pool.serve(self.worker.slot, self.batches, self.worker.start, read)


class Grouped(ModeBase):
    """Every batch of one value of ``group_by`` (or mostly, for the bounded pool), over ``inner``'s cells."""

    def __init__(self, inner: SamplingMode, reader: MultiReader) -> None:
        super().__init__(inner.config)  # type: ignore[attr-defined]
        self.inner, self.reader = inner, reader
        self.sampled = inner.sampled

    def plan_epoch(self, epoch: int) -> EpochPlan:
        return self.inner.plan_epoch(epoch)

    def batches(self, cells: EpochPlan, worker: WorkerPlan) -> GroupedBatches:
        raise NotImplementedError

    def schedule(self, cells: EpochPlan, worker: WorkerPlan) -> GroupedSchedule:
        return GroupedSchedule(worker, self.batches(cells, worker))

    def identity(self) -> dict[str, Any]:
        return {**self.inner.identity(), "group_by": self.config.group_by}

    def resume_refusal(self) -> str | None:
        return "cannot resume a group_by run on another world size, batch size or workers"

    def check_column(self) -> None:
        """The group column exists in every stream (checked at construction, not in a worker)."""
        column = self.config.group_by
        for r in self.reader.readers:
            counted = r.manifest.labels.columns if r.manifest.labels else ()
            if column not in counted and column not in r.metadata(0).columns:
                where = f"stream {self.reader.names[self.reader.readers.index(r)]} ({r.root})"
                raise ShardError(f"{where}: no metadata column {column!r} (group_by)")

    def missing(self, shard: int, values: np.ndarray) -> None:
        """A shard with cells that have no group value is an error naming it."""
        gone = pd.isna(values)
        if gone.any():
            raise ShardError(
                f"{self.reader.shards[shard].path}: {int(gone.sum())} cells have no {self.config.group_by} "
                "value; fill it at ingest or group by another column"
            )
