"""The sampling-mode protocol: what every mode says about an epoch, and the sequential batch schedule.

A mode answers five questions, each a method of ``SamplingMode``:

1. ``plan_epoch(epoch)``: which cells the epoch serves, as an ``EpochPlan`` (pure planning, no read but
   what the mode's own labels need);
2. ``schedule(cells, worker)``: one worker's batches, as a ``Schedule`` that serves them from the windows
   the dataset reads;
3. ``n_batches(cells, worker)``: how many, without reading a shard (every rank must agree);
4. ``identity()``: the settings a saved loader state must match to resume;
5. ``resume_refusal()``: why a resume on another layout (world size, batch size, workers) is refused,
   or None when the elastic resume applies.

Most modes only choose cells (``plain``, ``runs``, ``weighted``) and batch them in serving order
(``SequentialSchedule``, here); a grouped mode wraps one of them and cuts its own batches.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import numpy as np

from ...plan.epoch import EpochPlan
from ...plan.worker import WorkerPlan
from ..config import LoaderConfig
from ..windows import Window

__all__ = ["ModeBase", "SamplingMode", "Schedule", "SequentialSchedule", "Served"]

#: one served batch: (its number in the worker's epoch, its cells as window parts, extra pad flags or None)
Served = tuple[int, list[Window], "np.ndarray | None"]


class Schedule(Protocol):
    """One worker's batches of a stage: which windows they need and how they are cut from them."""

    n_batches: int
    first_window: int  # the first window a batch still to serve needs
    last_needed: int  # the slot position of the last cell a batch still to serve needs (-1: none)

    def serve(self, read: Callable[[int], Window]) -> Iterator[Served]:
        """The batches from the worker's start on; ``read(k)`` reads window ``k`` (in order, once)."""
        ...


class SamplingMode(Protocol):
    """How an epoch's cells are chosen and batched (see the module docstring)."""

    name: ClassVar[str]
    sampled: bool  # an epoch draws its cells (a cell may be served more than once), not every shard once

    def plan_epoch(self, epoch: int) -> EpochPlan: ...

    def schedule(self, cells: EpochPlan, worker: WorkerPlan) -> Schedule: ...

    def n_batches(self, cells: EpochPlan, worker: WorkerPlan) -> int: ...

    def identity(self) -> dict[str, Any]: ...

    def resume_refusal(self) -> str | None: ...


@dataclass(frozen=True)
class SequentialSchedule:
    """Batches cut in serving order at the worker plan's ``ends`` (the plain layout: a window's rows are
    carried over into the next batch)."""

    worker: WorkerPlan

    @property
    def n_batches(self) -> int:
        return self.worker.n_batches

    @property
    def first_window(self) -> int:
        return self.worker.first_window

    @property
    def last_needed(self) -> int:
        ends = self.worker.ends
        return int(ends[-1]) - 1 if len(ends) else -1

    def serve(self, read: Callable[[int], Window]) -> Iterator[Served]:
        w = self.worker
        ends, b = w.ends, w.start
        offset = int(ends[b - 1]) if b else 0
        k, skip = w.first_window, w.skip
        carry: list[Window] = []
        carried = 0
        while k < w.slot.n_windows and b < len(ends):
            window = read(k)
            window = window.with_rows(window.rows[skip:])
            skip = 0
            carry.append(window)
            carried += len(window.rows)
            while b < len(ends) and carried >= (size := int(ends[b]) - offset):
                batch, carry, carried = _cut(carry, carried, size)
                offset += size
                yield b, batch, None
                b += 1
            k += 1


def _cut(carry: list[Window], carried: int, size: int) -> tuple[list[Window], list[Window], int]:
    """Take ``size`` cells from the front of the carried windows: (the batch's parts, the rest, its size)."""
    need, parts, rest = size, [], []
    for window in carry:
        take = window.rows[:need] if need else window.rows[:0]
        if len(take):
            parts.append(window.with_rows(take))
        if len(window.rows) > len(take):
            rest.append(window.with_rows(window.rows[len(take) :]))
        need -= len(take)
    return parts, rest, carried - size


class ModeBase:
    """What the cell-choosing modes share: sequential batches, the elastic resume, their identity."""

    name: ClassVar[str] = ""
    sampled: bool = False

    def __init__(self, config: LoaderConfig) -> None:
        self.config = config

    def plan_epoch(self, epoch: int) -> EpochPlan:
        raise NotImplementedError

    def schedule(self, cells: EpochPlan, worker: WorkerPlan) -> Schedule:
        return SequentialSchedule(worker)

    def n_batches(self, cells: EpochPlan, worker: WorkerPlan) -> int:
        return worker.n_batches

    def identity(self) -> dict[str, Any]:
        """The sampling settings of a saved state's ``mix`` (the keys every mode writes, grouped or not)."""
        cfg = self.config
        return {
            "num_samples": cfg.num_samples,
            "replacement": cfg.replacement,
            "group_by": None,
            "weighting": cfg.weighting.as_dict() if cfg.weighting else None,
        }

    def resume_refusal(self) -> str | None:
        return None
