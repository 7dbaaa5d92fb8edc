"""One worker's part of an epoch, as a pure function: which slot it serves, its batches' ends, and where
it starts (after a resume: the window, and the cells of it already served).

This is all the planning a DataLoader worker does before it reads: the dataset's ``__iter__`` then only
reads windows, cuts batches at ``ends`` and collates them. Everything comes from (the epoch's size and
per-cell token counts, the topology, the finished stages, the position, the loader's settings), so every
rank and worker of every epoch can be planned, and checked, in one process without reading a byte.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .budget import budget_plan
from .elastic import remaining_sequence
from .slots import SlotPlan, plan_slots
from .state import Stage
from .topology import Topology

__all__ = ["Identity", "SlotOptions", "WorkerPlan", "plan_worker"]


class Identity:
    """The sequence of a stage with no stage before it: position ``i`` is epoch position ``i``. Indexing
    returns the positions themselves, so a worker holds no array of the epoch's size (at 160M cells an
    ``arange`` is 1.3 GB in every loader process)."""

    __slots__ = ("n",)

    def __init__(self, n: int) -> None:
        self.n = int(n)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, at: np.ndarray | int) -> np.ndarray:
        at = np.asarray(at, dtype=np.int64)
        if at.size and (at.min() < 0 or at.max() >= self.n):
            raise IndexError(f"positions outside 0:{self.n}")
        return at

    def __array__(self, dtype: np.dtype | None = None, copy: bool | None = None) -> np.ndarray:
        return np.arange(self.n, dtype=dtype or np.int64)  # only for callers that need the array itself


@dataclass(frozen=True)
class WorkerPlan:
    """What one (rank, worker) serves of the current stage of an epoch, and where it starts."""

    seq: np.ndarray | Identity  # the stage's sequence: epoch positions still to serve, in order
    slots: tuple[SlotPlan, ...]  # every slot of the stage (grouped batches are planned over all of them)
    index: int  # this worker's slot: rank * max(workers, 1) + role
    ends: np.ndarray  # end offset of each of the slot's batches in its serving order
    start: int  # batches this role served already
    first_window: int  # the window that holds the first cell still to serve
    skip: int  # cells of that window served already

    @property
    def slot(self) -> SlotPlan:
        return self.slots[self.index]

    @property
    def n_batches(self) -> int:
        return len(self.ends)


@dataclass(frozen=True)
class SlotOptions:
    """The loader settings a worker's plan depends on (``LoaderConfig.slot_options`` gives them)."""

    batch_size: int
    seed: int = 0
    remainder: str = "drop"
    lanes: int = 4
    lane_cells: int = 256
    balance_tokens: bool = False
    balance_chunk: int = 64
    token_budget: int | None = None
    context_length: int = 2048


def plan_worker(
    n_cells: int,
    topology: Topology,
    options: SlotOptions,
    *,
    epoch: int,
    role: int,
    stages: Sequence[Stage] = (),
    start: int = 0,
    tokens: np.ndarray | None = None,
) -> WorkerPlan:
    """The plan of the worker playing slot ``role`` of ``topology``'s rank, ``start`` batches in.

    ``tokens``: every epoch position's token count (needed for ``balance_tokens`` and ``token_budget``).
    With ``token_budget`` the whole epoch's batch plan is computed, so that every rank agrees on the count.
    """
    o = options
    window = {"seed": o.seed, "epoch": epoch, "lanes": o.lanes, "lane_cells": o.lane_cells}
    seq: np.ndarray | Identity = Identity(n_cells)
    if stages:  # an elastic resume: only what the earlier stages did not serve
        seq = remaining_sequence(n_cells, stages, tokens=tokens, **window)
    balance = None
    if o.balance_tokens and tokens is not None:
        balance = tokens if isinstance(seq, Identity) else tokens[seq]
    world = {"world_size": topology.world_size, "num_workers": topology.num_workers, "batch_size": o.batch_size}
    slots = plan_slots(
        len(seq), **world, **window, policy=o.remainder, stage=len(stages), tokens=balance, chunk_cells=o.balance_chunk
    )
    index = topology.rank * max(topology.num_workers, 1) + role
    slot = slots[index]
    if o.token_budget:
        if tokens is None:
            raise ValueError("token_budget needs every position's token count")
        n = len(seq)

        def costs(at: np.ndarray) -> np.ndarray:
            cells = tokens[seq[np.where(at >= n, at - n, at) % n]]
            return np.minimum(cells, o.context_length - 2) + 2

        ends = budget_plan(slots, costs, o.token_budget)[index]
    else:
        ends = np.arange(1, slot.n_batches + 1, dtype=np.int64) * o.batch_size
    offset = int(ends[start - 1]) if start else 0
    k = int(np.searchsorted(slot.window_offsets, offset, side="right") - 1) if slot.n_cells else 0
    skip = offset - int(slot.window_offsets[k]) if slot.n_cells else 0
    return WorkerPlan(seq, tuple(slots), index, ends, start, k, skip)
