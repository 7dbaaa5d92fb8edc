"""Reading one window of a slot: runs of a shard's cells in one read each, repeats served from memory.

A window's positions map to (shard, cell) through the epoch plan. Consecutive cells of a shard are read
with one call (a sampled epoch's short gaps, up to ``READ_GAP`` cells, are read through and dropped: one
read of a few hundred cells costs about as much as one of a single cell, ~10 ms on Zarr here).

A sampled epoch may serve a cell many times (weights with replacement, repeats), its copies spread over
the epoch. Re-reading each copy would make every repeat an isolated read, so ``RepeatCache`` keeps a
cell the slot will serve again from its first read until its last use; the slot's whole read order is
known up front, so nothing is kept that is not used again. A byte budget bounds it; past the budget,
copies are read again (counted in ``misses``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import NamedTuple

import numpy as np

from ..plan.epoch import EpochPlan
from ..plan.slots import SlotPlan
from . import kernels

__all__ = ["READ_GAP", "RepeatCache", "Rows", "Window", "read_window", "slot_cells", "take_rows"]

#: cells of a shard skipped between two served ones that are still read in one range (then dropped)
READ_GAP = 128


def take_rows(genes: np.ndarray, offsets: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cells ``rows`` of a block (``genes``: (channels, tokens), ``offsets`` per cell), as a new block."""
    starts, lengths = offsets[rows], offsets[rows + 1] - offsets[rows]
    out_offsets = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum(lengths, out=out_offsets[1:])
    out = np.empty((genes.shape[0], int(out_offsets[-1])), dtype=genes.dtype)
    kernels.gather_rows(genes, starts.astype(np.int64, copy=False), lengths.astype(np.int64, copy=False), out)
    return out, out_offsets


class Rows(NamedTuple):
    """A window's served rows, in serving order: what a batch is collated from."""

    tokens: np.ndarray  # (2, T): gene ids, counts
    lengths: np.ndarray  # tokens per cell
    ids: np.ndarray  # cell ids
    pads: np.ndarray  # zero loss weight (a pad repeat or a skipped shard's placeholder)
    copies: np.ndarray  # which serving of its cell in the epoch (a sampled epoch's repeats)


@dataclass(frozen=True)
class Window:
    """Cells as read: ``tokens`` (2, T) gene ids and counts, ``offsets`` per cell, cell ``ids``, ``pads``
    (a pad repeat or a skipped cell: zero loss weight), ``copies`` (which serving of its cell in the
    epoch: 0 but for a sampled epoch's repeats), and ``rows``: the cells to serve, in order."""

    tokens: np.ndarray
    offsets: np.ndarray
    ids: np.ndarray
    pads: np.ndarray
    copies: np.ndarray
    rows: np.ndarray
    keys: np.ndarray | None = None
    """``(shard << 32) | cell`` of each read cell (where it lies in the set: for metadata columns)."""

    def with_rows(self, rows: np.ndarray) -> Window:
        return replace(self, rows=rows)

    def take(self) -> Rows:
        """The rows, in their order."""
        tokens, offsets = take_rows(self.tokens, self.offsets, self.rows)
        rows = self.rows
        return Rows(tokens, np.diff(offsets), self.ids[rows], self.pads[rows], self.copies[rows])

    def take_keys(self) -> np.ndarray:
        """The ``(shard << 32) | cell`` keys of the rows, in their order."""
        return self.take_keys_at(self.rows)

    def take_keys_at(self, rows: np.ndarray) -> np.ndarray:
        """The ``(shard << 32) | cell`` keys of read rows ``rows``."""
        if self.keys is None:
            raise ValueError("this window was read without cell keys")
        return self.keys[rows]


def _keys(shard: np.ndarray, cell: np.ndarray) -> np.ndarray:
    return (np.asarray(shard, dtype=np.int64) << 32) | np.asarray(cell, dtype=np.int64)


class RepeatCache:
    """Cells read once and served again later in the same slot and epoch."""

    def __init__(self, shard: np.ndarray, cell: np.ndarray, budget_bytes: int) -> None:
        keys, counts = np.unique(_keys(shard, cell), return_counts=True)
        self.multi = keys[counts > 1]  # sorted: a vectorized test of "served again" before any dict lookup
        self.left = dict(zip(self.multi.tolist(), counts[counts > 1].tolist(), strict=True))
        self.cells: dict[int, tuple[np.ndarray, object, bool]] = {}
        self.budget, self.bytes = budget_bytes, 0
        self.hits = self.misses = 0

    def __bool__(self) -> bool:
        return bool(self.left)

    def _used(self, key: int) -> int:
        left = self.left[key] - 1
        if left:
            self.left[key] = left
        else:
            del self.left[key]
            held = self.cells.pop(key, None)
            if held is not None:
                self.bytes -= held[0].nbytes
        return left

    def _multi(self, keys: np.ndarray) -> np.ndarray:
        """Indices of ``keys`` the slot serves more than once."""
        at = np.minimum(np.searchsorted(self.multi, keys), len(self.multi) - 1)
        return np.flatnonzero(self.multi[at] == keys) if len(self.multi) else np.zeros(0, np.int64)

    def held(self, shard: np.ndarray, cell: np.ndarray) -> np.ndarray:
        keys = _keys(shard, cell)
        out = np.zeros(len(keys), dtype=bool)
        for j in self._multi(keys).tolist():
            out[j] = int(keys[j]) in self.cells
        return out

    def take(self, shard: np.ndarray, cell: np.ndarray):
        """Held cells as one piece: (genes, offsets, ids, bad)."""
        keys = _keys(shard, cell).tolist()
        held = [self.cells[k] for k in keys]
        self.hits += len(keys)
        for k in keys:
            self._used(k)
        lengths = [g.shape[1] for g, _, _ in held]
        return (
            np.concatenate([g for g, _, _ in held], axis=1),
            np.concatenate([[0], np.cumsum(lengths)]),
            np.array([c for _, c, _ in held], dtype=object),
            np.array([b for _, _, b in held]),
        )

    def keep(self, shard: np.ndarray, cell: np.ndarray, genes, offsets, ids, bad) -> None:
        """After a read: count the use of each cell, hold those used again (within the budget)."""
        keys = _keys(shard, cell)
        for j in self._multi(keys).tolist():
            key = int(keys[j])
            if key not in self.left:  # its last copy was served already
                continue
            if self._used(key) and key not in self.cells:
                piece = genes[:, offsets[j] : offsets[j + 1]].copy()
                if self.bytes + piece.nbytes <= self.budget:
                    self.cells[key] = (piece, ids[j], bool(bad[j]))
                    self.bytes += piece.nbytes
                else:
                    self.misses += 1


def read_window(
    plan: EpochPlan, seq: np.ndarray, slot: SlotPlan, k: int, read_run: Callable, cache: RepeatCache | None
) -> Window:
    """Window ``k`` of ``slot``: its cells in read order, ``rows`` in served (shuffled) order.
    ``read_run(shard, start, stop)`` returns ``(tokens (2, T), offsets, ids, bad)``."""
    order = slot.window_positions(k)  # shuffled span-relative positions
    pieces, pos_index, copies, keys = [], [], [], []
    for lo, hi in slot.window_ranges(k):
        at = slot.to_sequence(np.arange(lo, hi))  # index into the stage's sequence; beyond it: pad repeats
        pad = at >= len(seq)
        epoch_pos = seq[np.where(pad, at - len(seq), at) % len(seq)]
        shard, cell, _ = plan.locate(epoch_pos)
        copies.append(plan.copies(epoch_pos))
        keys.append(_keys(shard, cell))
        step = np.diff(cell)
        cuts = np.flatnonzero((np.diff(shard) != 0) | (step < 1) | (step > READ_GAP + 1)) + 1
        hit = cache.held(shard, cell) if cache else None
        for a, b in zip(np.r_[0, cuts], np.r_[cuts, len(at)], strict=True):
            if hit is not None and hit[a:b].all():  # a run read anyway costs ~ its first cell: only
                genes, offsets, ids, bad = cache.take(shard[a:b], cell[a:b])  # runs wholly held are served
                pieces.append((genes, offsets, ids, pad[a:b] | bad))  # from memory
                continue
            first, last = int(cell[a]), int(cell[b - 1]) + 1
            genes, offsets, ids, bad = read_run(int(shard[a]), first, last)
            if last - first != b - a:
                rows = cell[a:b] - first
                genes, offsets = take_rows(genes, offsets, rows)
                ids, bad = ids[rows], bad[rows]
            if cache:
                cache.keep(shard[a:b], cell[a:b], genes, offsets, ids, bad)
            pieces.append((genes, offsets, ids, pad[a:b] | bad))
        pos_index.append(np.arange(lo, hi))
    lengths = np.concatenate([np.diff(p[1]) for p in pieces])
    genes = np.concatenate([p[0] for p in pieces], axis=1)  # rows: gene tokens, counts
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    ids_all, pads_all = np.concatenate([p[2] for p in pieces]), np.concatenate([p[3] for p in pieces])
    span_pos = np.concatenate(pos_index)  # ascending: lanes are read in order
    rows = np.searchsorted(span_pos, order)  # served order -> row of the window's read
    return Window(genes, offsets, ids_all, pads_all, np.concatenate(copies), rows, np.concatenate(keys))


def slot_cells(plan: EpochPlan, seq: np.ndarray, slot: SlotPlan, first_window: int) -> tuple[np.ndarray, np.ndarray]:
    """(shard, cell) of every position the slot reads from window ``first_window`` on, in read order."""
    ranges = [r for w in range(first_window, slot.n_windows) for r in slot.window_ranges(w)]
    if not ranges:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    at = slot.to_sequence(np.concatenate([np.arange(lo, hi) for lo, hi in ranges]))
    shard, cell, _ = plan.locate(seq[np.where(at >= len(seq), at - len(seq), at) % len(seq)])
    return shard, cell
