"""The epoch's sequence: which cells it serves, in what order (a pure function of the shard sizes, seed and epoch).

A plain epoch serves every shard once, whole, in an order permuted by ``default_rng([seed, epoch])``; a
sampled epoch (``mixing.sampled_plan``) serves *units* of drawn cells. Either way a position of the
sequence maps to a (shard, cell) through ``EpochPlan.locate``.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from .slots import SlotPlan, plan_slots

__all__ = ["EpochPlan", "plan_epoch"]


@dataclass(frozen=True)
class EpochPlan:
    """Shard order and slot spans of one epoch; cells are named by (shard, index in shard).

    A plain epoch serves every shard once, whole (``shard_order`` is a permutation). A *sampled* epoch
    (``mixing.sampled_plan``: stream weights, repeats, weighted cells) serves *units*: ``shard_order[u]``
    is unit ``u``'s shard, ``unit_cells[u]`` its size and ``cells`` the ascending cell indices of every
    unit, concatenated in serving order (a shard may appear in several units: its repeats);
    ``unit_copy[u]`` is which copy of its cells unit ``u`` serves (0: their first serving this epoch).

    A sampled epoch of *runs* (``mixing.run_plan``: uniform draws without replacement) names its units'
    cells without a per-cell array: cell ``j`` of unit ``u`` is ``unit_first[u] + j``, plus ``unit_gap[u]``
    from ``j = unit_hole[u]`` on (a run that wraps around inside its shard skips the cells between its
    end and its start). Memory is then O(units), not O(cells).

    A *drawn* epoch (``drawing.drawn_plan``: weighted or with-replacement draws) knows each unit's size but
    not its cells: ``resolver(u)`` gives unit ``u``'s ``(cells, copies)``, drawn from its shard's labels
    when a process first needs them (``drawing.unit_resolver``). Memory: O(units) plus the units resolved.
    """

    shard_order: np.ndarray
    shard_cells: np.ndarray
    n_slots: int
    per_slot: int
    policy: str
    unit_cells: np.ndarray | None = None
    cells: np.ndarray | None = None
    unit_copy: np.ndarray | None = None
    unit_first: np.ndarray | None = None
    unit_hole: np.ndarray | None = None
    unit_gap: np.ndarray | None = None
    unit_kind: np.ndarray | None = None
    resolver: Callable[[int], tuple[np.ndarray, np.ndarray]] | None = None

    @property
    def sampled(self) -> bool:
        """Does the epoch serve drawn units (not every shard once, whole)?"""
        return self.unit_cells is not None

    def _unit_cells(self, k: np.ndarray, j: np.ndarray) -> np.ndarray:
        """Cell index in its shard of offset ``j`` of unit ``k`` (run units)."""
        return self.unit_first[k] + j + np.where(j >= self.unit_hole[k], self.unit_gap[k], 0)

    @cached_property
    def _starts(self) -> np.ndarray:
        sizes = self.shard_cells[self.shard_order] if self.unit_cells is None else self.unit_cells
        return np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)])

    @property
    def n_cells(self) -> int:
        return int(self._starts[-1])

    def locate(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Sequence positions → (shard id, cell index in shard, is_pad). Pad positions wrap to the head."""
        positions = np.asarray(positions, dtype=np.int64)
        is_pad = positions >= self.n_cells
        wrapped = np.where(is_pad, positions - self.n_cells, positions) % max(self.n_cells, 1)
        k = np.searchsorted(self._starts, wrapped, side="right") - 1
        if self.resolver is not None:
            return self.shard_order[k], self._resolved(k, wrapped - self._starts[k], 0), is_pad
        if self.cells is not None:
            return self.shard_order[k], self.cells[wrapped].astype(np.int64), is_pad
        if self.unit_first is not None:
            return self.shard_order[k], self._unit_cells(k, wrapped - self._starts[k]), is_pad
        return self.shard_order[k], wrapped - self._starts[k], is_pad

    def copies(self, positions: np.ndarray) -> np.ndarray:
        """Which serving of its cell each position is within the epoch (0: the first; a sampled epoch's
        repeats count up), so that the copies of a cell get masks of their own. Pad positions wrap."""
        positions = np.asarray(positions, dtype=np.int64)
        if self.unit_copy is None:
            return np.zeros(len(positions), dtype=np.int32)
        wrapped = np.where(positions >= self.n_cells, positions - self.n_cells, positions) % max(self.n_cells, 1)
        k = np.searchsorted(self._starts, wrapped, side="right") - 1
        if self.resolver is not None:
            return self._resolved(k, wrapped - self._starts[k], 1).astype(np.int32)
        return self.unit_copy[k]

    def _resolved(self, k: np.ndarray, offset: np.ndarray, which: int) -> np.ndarray:
        """Cells (``which`` 0) or copies (1) at ``offset`` of units ``k`` of a drawn epoch."""
        out = np.empty(len(k), dtype=np.int64)
        order = np.argsort(k, kind="stable")
        ks = k[order]
        cuts = np.flatnonzero(np.r_[True, ks[1:] != ks[:-1], True]) if len(ks) else np.zeros(1, np.int64)
        for a, b in itertools.pairwise(cuts):
            at = order[a:b]
            out[at] = self.resolver(int(ks[a]))[which][offset[at]]
        return out

    def gather(self, per_shard: Callable[[int], np.ndarray]) -> np.ndarray:
        """A per-cell value (``per_shard(shard)[cell]``) at every position of the sequence, in order."""
        parts = []
        for u, shard in enumerate(self.shard_order.tolist()):
            values = np.asarray(per_shard(int(shard)))
            if self.resolver is not None:
                parts.append(values[self.resolver(u)[0]])
            elif self.unit_first is not None:
                size = int(self._starts[u + 1] - self._starts[u])
                parts.append(values[self._unit_cells(np.full(size, u), np.arange(size))])
            elif self.cells is None:
                parts.append(values)
            else:
                parts.append(values[self.cells[self._starts[u] : self._starts[u + 1]]])
        return np.concatenate(parts) if parts else np.zeros(0, np.int64)


def plan_epoch(
    shard_cells: np.ndarray, *, seed: int, epoch: int, **slot_options: Any
) -> tuple[EpochPlan, list[SlotPlan]]:
    """The epoch's shard order and the plan of all its slots (a job that is not resumed elastically);
    ``slot_options`` are ``plan_slots``' (``world_size``, ``num_workers``, ``batch_size``, ...)."""
    shard_cells = np.asarray(shard_cells, dtype=np.int64)
    order = np.random.default_rng([seed, epoch]).permutation(len(shard_cells))
    slots = plan_slots(int(shard_cells.sum()), seed=seed, epoch=epoch, **slot_options)
    return EpochPlan(order, shard_cells, len(slots), slots[0].n_cells, slot_options.get("policy", "drop")), slots
