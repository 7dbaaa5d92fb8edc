"""The pool of grouped batches: cells read window by window wait here until their group's batch is served.

Windows enter the pool as they were read (no copy); a served position is found through two arrays over
the slot (part and row of each position), so a batch is gathered in its own order whatever windows its
cells came from, identically after a resume. When more than half of the pooled cells are served, the
rest is compacted into one part: memory stays within about twice the cells still waiting plus a window.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from .grouping import GroupedBatches
from .windows import take_rows

__all__ = ["Pool"]


class Pool:
    def __init__(self, n_positions: int, last_use: np.ndarray) -> None:
        self.parts: dict[int, tuple] = {}  # id -> (genes, offsets, ids, pads, positions)
        self.part = np.full(n_positions, -1, dtype=np.int32)
        self.row = np.zeros(n_positions, dtype=np.int32)
        self.last = last_use
        self._next = 0

    def add(self, genes, offsets, ids, pads, positions: np.ndarray) -> None:
        """A window in read order; ``positions[j]``: the serving position of read row ``j``."""
        p = self._next
        self._next += 1
        self.parts[p] = (genes, offsets, ids, pads, positions)
        self.part[positions] = p
        self.row[positions] = np.arange(len(positions), dtype=np.int32)

    def gather(self, need: np.ndarray) -> list[tuple]:
        """Collate parts ``(genes, offsets, ids, pads, rows)`` for positions ``need``, in that order."""
        pp, rr = self.part[need], self.row[need]
        cuts = np.flatnonzero(np.diff(pp)) + 1
        return [(*self.parts[int(pp[a])][:4], rr[a:b]) for a, b in zip(np.r_[0, cuts], np.r_[cuts, len(need)],
                                                                         strict=True)]  # fmt: skip

    def collect(self, served: int) -> None:
        """Drop what batches ``< served`` used; compact when most of the pool is dead."""
        live, total = [], 0
        for p, (_, _, _, _, pos) in list(self.parts.items()):
            alive = self.last[pos] >= served
            total += len(pos)
            if not alive.any():
                del self.parts[p]
            else:
                live.append((p, np.flatnonzero(alive)))
        if len(live) < 2 or 2 * sum(len(r) for _, r in live) >= total:
            return
        pieces = []
        for p, rows in live:
            genes, offsets, ids, pads, pos = self.parts.pop(p)
            g, o = take_rows(genes, offsets, rows)
            pieces.append((g, o, ids[rows], pads[rows], pos[rows]))
        lengths = np.concatenate([np.diff(o) for _, o, _, _, _ in pieces])
        self.add(np.concatenate([g for g, *_ in pieces], axis=1), np.concatenate([[0], np.cumsum(lengths)]),
                 *(np.concatenate([piece[i] for piece in pieces]) for i in (2, 3, 4)))  # fmt: skip


def serve(ds, plan, seq: np.ndarray, slot, mine: GroupedBatches, epoch: int) -> Iterator[dict]:
    """Grouped batches of ``slot`` from ``ds._batches`` on (the dataset reads and collates)."""
    last = mine.last_use(slot.n_cells)
    ready = mine.ready
    first_needed = int(mine.index[ds._batches :].min())
    k = int(np.searchsorted(slot.window_offsets, first_needed, side="right") - 1)
    ds._start_cache(plan, seq, slot, k)
    pool = Pool(slot.n_cells, last)
    while k < slot.n_windows and ds._batches < mine.n_batches:
        genes, offsets, ids, pads, rows = ds._window(plan, seq, slot, k)
        lo = int(slot.window_offsets[k])
        positions = np.empty(len(rows), dtype=np.int64)
        positions[rows] = lo + np.arange(len(rows))  # read row -> serving position
        pool.add(genes, offsets, ids, pads, positions)
        hi = lo + len(rows)
        while ds._batches < mine.n_batches and ready[ds._batches] < hi:
            b = ds._batches
            ds._batches += 1
            yield ds._collate(pool.gather(mine.index[b]), epoch, extra_pad=mine.pad[b])
        pool.collect(ds._batches)
        k += 1
