"""Batches by a token budget: as many cells per batch as fit ``n_cells * longest <= budget``.

The whole epoch's batch plan is computed up front for every slot and cut to the count all slots
reach, so every rank and worker agrees on the number of batches (no collective can hang).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..jit import kernel
from .slots import SlotPlan, stream_positions

__all__ = ["budget_batches", "budget_plan"]


def budget_batches(costs: np.ndarray, budget: int) -> np.ndarray:
    """Batch end offsets for a stream of per-cell padded lengths: each batch as many cells as fit
    ``n_cells * max_length <= budget`` (a cell longer than the budget is a batch of its own)."""
    return _budget_ends(np.asarray(costs, dtype=np.int64), int(budget))


@kernel
def _budget_ends(costs, budget):  # pragma: no cover - compiled
    ends = np.empty(len(costs), dtype=np.int64)
    n_batches = 0
    count = 0
    longest = 0
    for i in range(len(costs)):
        m = max(longest, costs[i])
        if count > 0 and (count + 1) * m > budget:
            ends[n_batches] = i
            n_batches += 1
            count, m = 0, costs[i]
        count += 1
        longest = m
    if count > 0:
        ends[n_batches] = len(costs)
        n_batches += 1
    return ends[:n_batches]


def budget_plan(slots: list[SlotPlan], costs_of: Callable[[np.ndarray], np.ndarray], budget: int) -> list[np.ndarray]:
    """Every slot's batch ends under a token budget, cut to the count all slots reach (the epoch's plan
    is computed up front, so every rank and worker agrees on the number of batches; the cells after the
    common count are the remainder of this epoch)."""
    ends = []
    for slot in slots:
        pos = stream_positions(slot, slot.n_cells)
        ends.append(budget_batches(costs_of(slot.to_sequence(pos)), budget))
    common = min((len(e) for e in ends), default=0)
    return [e[:common] for e in ends]
