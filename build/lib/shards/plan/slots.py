"""Slots: the equal share of an epoch's sequence that each (rank, DataLoader worker) serves, and its windows.

The plan of an epoch is a function of (per-shard cell counts, world size, number of workers, batch size,
seed, epoch, remainder policy) only, so every rank and worker computes its own part without talking to
the others, and tests can check every rank of every epoch in one process.

1. The shards are permuted with ``default_rng([seed, epoch])``: the epoch's *sequence* is their cells in
   that order. Re-permuting every epoch rotates shards across ranks.
2. The sequence is cut into ``world_size * max(num_workers, 1)`` equal, contiguous *spans* (slot
   ``rank * workers + worker``), each a whole number of batches, so every rank yields the same number of
   batches and no collective can hang on a short rank. The remainder (fewer than slots x batch cells)
   is dropped from the sequence's tail (``drop``: other cells each epoch, as the shard order changes) or
   filled by repeating its head, flagged so those cells carry zero loss weight (``pad``).
3. Within a span, cells are served window by window: a window takes ``lane_cells`` consecutive cells
   from each of ``lanes`` evenly spaced points of the span (several shards open at once) and is shuffled
   with ``default_rng([seed, epoch, slot, window])``. Any batch's position is therefore computable in O(1),
   which is what exact resumption needs.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

__all__ = ["REMAINDER_POLICIES", "SlotPlan", "check_world", "plan_slots", "stream_positions"]

REMAINDER_POLICIES = ("drop", "pad")


@dataclass(frozen=True)
class SlotPlan:
    """The part of an epoch that one (rank, worker) serves."""

    slot: int
    span_start: int  # position in the epoch sequence (positions >= n_cells are pad repeats)
    n_cells: int  # a whole number of batches
    batch_size: int
    lanes: int
    lane_cells: int
    seed: int
    epoch: int
    stage: int = 0  # > 0 after an elastic resume changed the world within this epoch
    chunks: np.ndarray | None = None  # token balancing: sequence start of each of the slot's chunks
    chunk_cells: int = 0

    def to_sequence(self, positions: np.ndarray) -> np.ndarray:
        """Span-relative positions → positions in the stage's sequence (>= its length: pad repeats)."""
        positions = np.asarray(positions, dtype=np.int64)
        if self.chunks is None:
            return self.span_start + positions
        return self.chunks[positions // self.chunk_cells] + positions % self.chunk_cells

    @property
    def n_batches(self) -> int:
        return self.n_cells // self.batch_size

    @cached_property
    def _lane_len(self) -> int:
        return -(-self.n_cells // self.lanes)

    @cached_property
    def n_windows(self) -> int:
        return -(-self._lane_len // self.lane_cells) if self.n_cells else 0

    def window_ranges(self, k: int) -> list[tuple[int, int]]:
        """Span-relative ``[lo, hi)`` ranges of window ``k``: one run of consecutive cells per lane."""
        out = []
        for lane in range(self.lanes):
            base = lane * self._lane_len
            lo = base + k * self.lane_cells
            hi = min(base + min((k + 1) * self.lane_cells, self._lane_len), self.n_cells)
            if hi > lo:
                out.append((lo, hi))
        return out

    def window_positions(self, k: int) -> np.ndarray:
        """Span-relative positions of window ``k``, in the order they are served (shuffled)."""
        ranges = self.window_ranges(k)
        pos = (
            np.concatenate([np.arange(lo, hi, dtype=np.int64) for lo, hi in ranges])
            if ranges
            else np.zeros(0, np.int64)
        )
        return pos[np.random.default_rng([self.seed, self.epoch, self.stage, self.slot, k]).permutation(len(pos))]

    @cached_property
    def window_offsets(self) -> np.ndarray:
        """Stream offset at which each window starts (``n_windows + 1`` values)."""
        k = np.arange(self.n_windows, dtype=np.int64)[:, None]
        base = np.arange(self.lanes, dtype=np.int64)[None, :] * self._lane_len
        lo = base + k * self.lane_cells  # what ``window_ranges`` cuts, for every window at once
        hi = np.minimum(base + np.minimum((k + 1) * self.lane_cells, self._lane_len), self.n_cells)
        sizes = np.maximum(hi - lo, 0).sum(axis=1)
        return np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)])


def check_world(world_size: int, num_workers: int, batch_size: int, policy: str, lanes: int, lane_cells: int) -> None:
    if world_size < 1:
        raise ValueError(f"world_size={world_size}: must be at least 1")
    if num_workers < 0:
        raise ValueError(f"num_workers={num_workers}: must be >= 0")
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size}: must be at least 1; set --data.batch_size")
    if policy not in REMAINDER_POLICIES:
        raise ValueError(f"remainder policy {policy!r}: choose one of {REMAINDER_POLICIES}")
    if lanes < 1 or lane_cells < 1:
        raise ValueError("lanes and lane_cells must be at least 1")


def plan_slots(
    n: int,
    *,
    world_size: int,
    num_workers: int,
    batch_size: int,
    seed: int,
    epoch: int,
    policy: str = "drop",
    lanes: int = 4,
    lane_cells: int = 256,
    stage: int = 0,
    tokens: np.ndarray | None = None,
    chunk_cells: int = 64,
) -> list[SlotPlan]:
    """Equal shares of a sequence of ``n`` cells for every slot (``rank * max(num_workers, 1) + worker``).

    Without ``tokens``: contiguous spans. With ``tokens`` (per sequence position): balanced by tokens.
    The used part of the sequence (plus pad repeats) is cut into chunks of ``chunk_cells`` consecutive
    cells (a divisor of the batch size, so reads stay runs), the chunks are sorted by their token sums
    and dealt out in snake order (0, 1, .., S-1, S-1, .., 0, ..), so every slot gets the same number
    of cells and nearly the same number of tokens.
    """
    check_world(world_size, num_workers, batch_size, policy, lanes, lane_cells)
    n_slots = world_size * max(num_workers, 1)
    unit = n_slots * batch_size
    per_slot = (n // unit if policy == "drop" else -(-n // unit)) * batch_size
    if tokens is None:
        return [
            SlotPlan(s, s * per_slot, per_slot, batch_size, lanes, lane_cells, seed, epoch, stage)
            for s in range(n_slots)
        ]
    c = int(np.gcd(batch_size, chunk_cells))
    used = n_slots * per_slot
    tok = np.asarray(tokens)
    # pad repeats weigh what they repeat; a view (no copy of a 100M-cell array) when nothing is repeated
    tok = tok[:used] if used <= n else np.resize(tok, used)  # repeats wrap around, as ``locate`` does
    starts = np.arange(0, used, c, dtype=np.int64)
    sums = np.add.reduceat(tok, starts, dtype=np.int64) if used else np.zeros(0, np.int64)
    order = starts[np.argsort(-sums, kind="stable")]
    # dealt in snake order: in each lap of 2 x slots chunks, slot s takes the s-th and the (2S-1-s)-th.
    # As a matrix of laps, slot s owns columns s and 2S-1-s; one sort along the laps gives every slot's
    # chunk starts in ascending order at once (a mask per slot cost 6 s per rank at 1,024 x 8 slots)
    period = 2 * n_slots
    laps = -(-len(order) // period)
    end = np.iinfo(np.int64).max  # sentinel for the last, partial lap; sorts last
    padded = np.full(laps * period, end, dtype=np.int64)
    padded[: len(order)] = order
    lapped = padded.reshape(laps, period)
    owned = np.concatenate([lapped[:, :n_slots], lapped[:, ::-1][:, :n_slots]], axis=0)
    owned.sort(axis=0)
    counts = (owned != end).sum(axis=0)
    return [
        SlotPlan(s, 0, per_slot, batch_size, lanes, lane_cells, seed, epoch, stage, owned[: counts[s], s].copy(), c)
        for s in range(n_slots)
    ]


def stream_positions(slot: SlotPlan, count: int) -> np.ndarray:
    """Span-relative positions of the first ``count`` cells a slot serves."""
    out, have, k = [], 0, 0
    while have < count and k < slot.n_windows:
        pos = slot.window_positions(k)[: count - have]
        out.append(pos)
        have += len(pos)
        k += 1
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)
