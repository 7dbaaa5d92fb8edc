"""The pool of grouped batches: cells read window by window wait here until their group's batch is served.

Windows enter the pool as they were read (no copy); a served position is found through two arrays over
the slot (part and row of each position), so a batch is gathered in its own order whatever windows its
cells came from, identically after a resume. When more than half of the pooled cells are served, the
rest is compacted into one part: memory stays within about twice the cells still waiting plus a window.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

from ..plan.grouping import GroupedBatches
from ..plan.slots import SlotPlan
from .windows import Window, take_rows

__all__ = ["Pool", "first_window", "serve"]


class Pool:
    def __init__(self, n_positions: int, last_use: np.ndarray) -> None:
        self.parts: dict[int, tuple[Window, np.ndarray]] = {}  # id -> (window, serving position of each row)
        self.part = np.full(n_positions, -1, dtype=np.int32)
        self.row = np.zeros(n_positions, dtype=np.int32)
        self.last = last_use
        self._next = 0

    def add(self, window: Window, positions: np.ndarray) -> None:
        """A window in read order; ``positions[j]``: the serving position of read row ``j``."""
        p = self._next
        self._next += 1
        self.parts[p] = (window, positions)
        self.part[positions] = p
        self.row[positions] = np.arange(len(positions), dtype=np.int32)

    def gather(self, need: np.ndarray) -> list[Window]:
        """The pooled cells at serving positions ``need``, in that order (windows with those rows)."""
        pp, rr = self.part[need], self.row[need]
        cuts = np.flatnonzero(np.diff(pp)) + 1
        bounds = zip(np.r_[0, cuts], np.r_[cuts, len(need)], strict=True)
        return [self.parts[int(pp[a])][0].with_rows(rr[a:b]) for a, b in bounds]

    def collect(self, served: int) -> None:
        """Drop what batches ``< served`` used; compact when most of the pool is dead."""
        live, total = [], 0
        for p, (_, pos) in list(self.parts.items()):
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
            window, pos = self.parts.pop(p)
            tokens, offsets = take_rows(window.tokens, window.offsets, rows)
            keys = window.take_keys_at(rows)
            pieces.append((tokens, offsets, window.ids[rows], window.pads[rows], window.copies[rows], pos[rows], keys))
        lengths = np.concatenate([np.diff(piece[1]) for piece in pieces])
        tokens = np.concatenate([piece[0] for piece in pieces], axis=1)
        ids, pads, copies, pos, keys = (np.concatenate([piece[i] for piece in pieces]) for i in (2, 3, 4, 5, 6))
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        self.add(Window(tokens, offsets, ids, pads, copies, np.zeros(0, np.int64), keys), pos)


def first_window(slot: SlotPlan, mine: GroupedBatches, start: int) -> int:
    """The first window holding a cell that a batch from ``start`` on needs."""
    first_needed = int(mine.index[start:].min())
    return int(np.searchsorted(slot.window_offsets, first_needed, side="right") - 1)


def serve(
    slot: SlotPlan, mine: GroupedBatches, start: int, read: Callable[[int], Window]
) -> Iterator[tuple[int, list[Window], np.ndarray]]:
    """``(batch number, its cells, its pad flags)`` for the slot's grouped batches from ``start`` on;
    ``read(k)`` reads window ``k`` (the caller reads and collates, the pool only holds and gathers)."""
    last = mine.last_use(slot.n_cells)
    ready = mine.ready
    k = first_window(slot, mine, start)
    pool = Pool(slot.n_cells, last)
    b = start
    while k < slot.n_windows and b < mine.n_batches:
        window = read(k)
        lo = int(slot.window_offsets[k])
        positions = np.empty(len(window.rows), dtype=np.int64)
        positions[window.rows] = lo + np.arange(len(window.rows))  # read row -> serving position
        pool.add(window, positions)
        hi = lo + len(window.rows)
        while b < mine.n_batches and ready[b] < hi:
            yield b, pool.gather(mine.index[b]), mine.pad[b]
            b += 1
        pool.collect(b)
        k += 1
