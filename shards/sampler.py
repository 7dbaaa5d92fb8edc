"""``DistributedShardSampler``: the epoch's plan for every (rank, worker), as a pure function.

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

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

import numba
import numpy as np

__all__ = [
    "REMAINDER_POLICIES",
    "DistributedShardSampler",
    "EpochPlan",
    "SlotPlan",
    "budget_batches",
    "budget_plan",
    "plan_epoch",
    "plan_slots",
    "remaining_sequence",
    "stream_positions",
    "worker_batches",
]

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

    def _window_ranges(self, k: int) -> list[tuple[int, int]]:
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
        ranges = self._window_ranges(k)
        pos = (
            np.concatenate([np.arange(lo, hi, dtype=np.int64) for lo, hi in ranges])
            if ranges
            else np.zeros(0, np.int64)
        )
        return pos[np.random.default_rng([self.seed, self.epoch, self.stage, self.slot, k]).permutation(len(pos))]

    @cached_property
    def window_offsets(self) -> np.ndarray:
        """Stream offset at which each window starts (``n_windows + 1`` values)."""
        sizes = [sum(hi - lo for lo, hi in self._window_ranges(k)) for k in range(self.n_windows)]
        return np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)])


@dataclass(frozen=True)
class EpochPlan:
    """Shard order and slot spans of one epoch; cells are named by (shard, index in shard).

    A plain epoch serves every shard once, whole (``shard_order`` is a permutation). A *sampled* epoch
    (``mixing.sampled_plan``: stream weights, repeats, weighted cells) serves *units*: ``shard_order[u]``
    is unit ``u``'s shard, ``unit_cells[u]`` its size and ``cells`` the ascending cell indices of every
    unit, concatenated in serving order (a shard may appear in several units: its repeats).
    """

    shard_order: np.ndarray
    shard_cells: np.ndarray
    n_slots: int
    per_slot: int
    policy: str
    unit_cells: np.ndarray | None = None
    cells: np.ndarray | None = None

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
        if self.cells is not None:
            return self.shard_order[k], self.cells[wrapped].astype(np.int64), is_pad
        return self.shard_order[k], wrapped - self._starts[k], is_pad

    def gather(self, per_shard: Callable[[int], np.ndarray]) -> np.ndarray:
        """A per-cell value (``per_shard(shard)[cell]``) at every position of the sequence, in order."""
        parts = []
        for u, shard in enumerate(self.shard_order.tolist()):
            values = np.asarray(per_shard(int(shard)))
            if self.cells is None:
                parts.append(values)
            else:
                parts.append(values[self.cells[self._starts[u] : self._starts[u + 1]]])
        return np.concatenate(parts) if parts else np.zeros(0, np.int64)


def _check(world_size: int, num_workers: int, batch_size: int, policy: str, lanes: int, lane_cells: int) -> None:
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
    n: int, *, world_size: int, num_workers: int, batch_size: int, seed: int, epoch: int, policy: str = "drop",
    lanes: int = 4, lane_cells: int = 256, stage: int = 0, tokens: np.ndarray | None = None, chunk_cells: int = 64,
) -> list[SlotPlan]:  # fmt: skip
    """Equal shares of a sequence of ``n`` cells for every slot (``rank * max(num_workers, 1) + worker``).

    Without ``tokens``: contiguous spans. With ``tokens`` (per sequence position): balanced by tokens.
    The used part of the sequence (plus pad repeats) is cut into chunks of ``chunk_cells`` consecutive
    cells (a divisor of the batch size, so reads stay runs), the chunks are sorted by their token sums
    and dealt out in snake order (0, 1, .., S-1, S-1, .., 0, ..), so every slot gets the same number
    of cells and nearly the same number of tokens.
    """
    _check(world_size, num_workers, batch_size, policy, lanes, lane_cells)
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


def plan_epoch(
    shard_cells: np.ndarray,
    *,
    world_size: int,
    num_workers: int,
    batch_size: int,
    seed: int,
    epoch: int,
    policy: str = "drop",
    lanes: int = 4,
    lane_cells: int = 256,
) -> tuple[EpochPlan, list[SlotPlan]]:
    """The epoch's shard order and the plan of all its slots (a job that is not resumed elastically)."""
    shard_cells = np.asarray(shard_cells, dtype=np.int64)
    _check(world_size, num_workers, batch_size, policy, lanes, lane_cells)
    order = np.random.default_rng([seed, epoch]).permutation(len(shard_cells))
    slots = plan_slots(int(shard_cells.sum()), world_size=world_size, num_workers=num_workers,
                       batch_size=batch_size, seed=seed, epoch=epoch, policy=policy, lanes=lanes,
                       lane_cells=lane_cells)  # fmt: skip
    per_slot = slots[0].n_cells
    return EpochPlan(order, shard_cells, len(slots), per_slot, policy), slots


def budget_batches(costs: np.ndarray, budget: int) -> np.ndarray:
    """Batch end offsets for a stream of per-cell padded lengths: each batch as many cells as fit
    ``n_cells * max_length <= budget`` (a cell longer than the budget is a batch of its own)."""
    return _budget_ends(np.asarray(costs, dtype=np.int64), int(budget))


@numba.njit(cache=True)
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


def worker_batches(total: int, num_workers: int) -> list[int]:
    """Batches each worker had yielded when a rank had consumed ``total`` (DataLoader round-robin)."""
    k = max(num_workers, 1)
    return [(total - w + k - 1) // k for w in range(k)]


def stream_positions(slot: SlotPlan, count: int) -> np.ndarray:
    """Span-relative positions of the first ``count`` cells a slot serves."""
    out, have, k = [], 0, 0
    while have < count and k < slot.n_windows:
        pos = slot.window_positions(k)[: count - have]
        out.append(pos)
        have += len(pos)
        k += 1
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


def remaining_sequence(
    n: int, stages: list[dict], *, seed: int, epoch: int, lanes: int, lane_cells: int, tokens: np.ndarray | None = None
) -> np.ndarray:
    """Epoch-sequence positions not yet served after the given (finished) stages, in sequence order.

    A stage is ``{world_size, num_workers, batch_size, policy, batches}``: a part of the epoch run with
    one world, each rank having consumed ``batches`` batches. The positions a later stage serves come
    from this array, so a job resumed on another world size serves every remaining cell exactly once.
    """
    seq = np.arange(n, dtype=np.int64)
    for i, st in enumerate(stages):
        slots = plan_slots(len(seq), world_size=st["world_size"], num_workers=st["num_workers"],
                           batch_size=st["batch_size"], seed=seed, epoch=epoch, policy=st["policy"],
                           lanes=lanes, lane_cells=lane_cells, stage=i,
                           tokens=None if tokens is None else tokens[seq])  # fmt: skip
        per_worker = worker_batches(st["batches"], st["num_workers"])
        used = []
        for slot in slots:
            count = per_worker[slot.slot % len(per_worker)] * slot.batch_size
            pos = slot.to_sequence(stream_positions(slot, count))
            used.append(pos[pos < len(seq)])  # pad repeats consumed nothing new
        served = np.zeros(len(seq), dtype=bool)
        if used:
            served[np.concatenate(used)] = True
        seq = seq[~served]
    return seq


class DistributedShardSampler:
    """The plan as an object: which cell ranges a (rank, worker) reads in an epoch, and in what order.

    A thin, picklable face over the pure functions above (``ShardedCellDataset`` uses them directly);
    handy to inspect or test a job's partitioning without reading a byte.
    """

    def __init__(self, shard_cells: np.ndarray, *, batch_size: int, seed: int = 0, remainder: str = "drop",
                 cell_tokens: list[np.ndarray] | None = None, lanes: int = 4,
                 lane_cells: int = 256) -> None:  # fmt: skip
        self.shard_cells = np.asarray(shard_cells, dtype=np.int64)
        self.cell_tokens = cell_tokens  # per shard, per cell: enables balancing by tokens
        self.batch_size, self.seed, self.remainder = batch_size, seed, remainder
        self.lanes, self.lane_cells = lanes, lane_cells
        _check(1, 0, batch_size, remainder, lanes, lane_cells)

    def ranges(
        self, *, world_size: int, rank: int, num_workers: int, worker_id: int, epoch: int
    ) -> list[tuple[int, int, int, bool]]:
        """``(shard, start, stop, is_pad)`` runs in serving order for one (rank, worker) in ``epoch``."""
        if not 0 <= rank < world_size or not 0 <= worker_id < max(num_workers, 1):
            raise ValueError(f"rank {rank} / worker {worker_id} outside world {world_size} x {num_workers} workers")
        plan, _ = plan_epoch(self.shard_cells, world_size=world_size, num_workers=num_workers,
                             batch_size=self.batch_size, seed=self.seed, epoch=epoch,
                             policy=self.remainder)  # fmt: skip
        tokens = None
        if self.cell_tokens is not None:
            tokens = np.concatenate([np.asarray(self.cell_tokens[i], dtype=np.int64) for i in plan.shard_order])
        slots = plan_slots(plan.n_cells, world_size=world_size, num_workers=num_workers, batch_size=self.batch_size,
                           seed=self.seed, epoch=epoch, policy=self.remainder, lanes=self.lanes,
                           lane_cells=self.lane_cells, tokens=tokens)  # fmt: skip
        slot = slots[rank * max(num_workers, 1) + worker_id]
        pos = slot.to_sequence(stream_positions(slot, slot.n_cells))
        shard, cell, pad = plan.locate(pos)
        runs = np.flatnonzero((np.diff(shard) != 0) | (np.diff(cell) != 1) | (np.diff(pad) != 0)) + 1
        return [(int(shard[a]), int(cell[a]), int(cell[b - 1]) + 1, bool(pad[a]))
                for a, b in zip(np.r_[0, runs], np.r_[runs, len(pos)], strict=True)] if len(pos) else []  # fmt: skip
