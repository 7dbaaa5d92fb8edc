"""Where each worker stands, and what is left of an epoch after earlier *stages* (parts of the epoch run
with another world size): the arithmetic of exact and elastic resume."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .slots import SlotPlan, plan_slots, stream_positions
from .state import Resume, Stage

__all__ = ["Runs", "remaining_sequence", "start_position", "worker_batches"]


def worker_batches(total: int, num_workers: int) -> list[int]:
    """Batches each worker had yielded when a rank had consumed ``total`` (DataLoader round-robin)."""
    k = max(num_workers, 1)
    return [(total - w + k - 1) // k for w in range(k)]


class Runs:
    """Epoch positions as ascending runs ``[start, start + length)``, in order: what is left of an epoch
    after elastic stages, in O(runs) memory. A stage leaves each slot's unserved lane tails (a few runs)
    and the unserved cells of its one partly served window (at most ``lanes * lane_cells``), so a re-plan
    at 160M cells holds a few million runs at most, not a position per cell. Indexes like an array."""

    __slots__ = ("_cum", "lengths", "starts")

    def __init__(self, starts: np.ndarray, lengths: np.ndarray) -> None:
        starts, lengths = np.asarray(starts, dtype=np.int64), np.asarray(lengths, dtype=np.int64)
        keep = lengths > 0
        self.starts, self.lengths = (starts, lengths) if keep.all() else (starts[keep], lengths[keep])
        self._cum = np.concatenate([[0], np.cumsum(self.lengths)])

    def __len__(self) -> int:
        return int(self._cum[-1])

    def __getitem__(self, at: np.ndarray | int) -> np.ndarray:
        at = np.asarray(at, dtype=np.int64)
        if at.size and (at.min() < 0 or at.max() >= len(self)):
            raise IndexError(f"positions outside 0:{len(self)}")
        k = np.searchsorted(self._cum, at, side="right") - 1
        return self.starts[k] + at - self._cum[k]

    def __array__(self, dtype: np.dtype | None = None, copy: bool | None = None) -> np.ndarray:
        out = np.repeat(self.starts - self._cum[:-1], self.lengths) + np.arange(len(self), dtype=np.int64)
        return out.astype(dtype) if dtype is not None else out

    def take(self, lo: np.ndarray, hi: np.ndarray) -> Runs:
        """The runs of indices ``[lo[i], hi[i])`` (ascending, disjoint) of this sequence, as positions."""
        lo, hi = np.asarray(lo, dtype=np.int64), np.asarray(hi, dtype=np.int64)
        inner = self._cum[1:-1]
        if not len(lo):
            return Runs(np.zeros(0, np.int64), np.zeros(0, np.int64))
        if len(self.starts) == 1:  # one run (the first stage's whole epoch): indices shift, nothing to cut
            return Runs(self.starts[0] + lo, hi - lo)
        # lo/hi interleave in order and the run boundaries ascend: a merge sort of sorted pieces is linear
        bounds = np.stack([lo, hi], axis=1).ravel()
        points = np.sort(np.concatenate([bounds, inner[(inner > lo.min()) & (inner < hi.max())]]), kind="stable")
        points = points[np.r_[True, points[1:] != points[:-1]]]
        if len(points) < 2:
            return Runs(np.zeros(0, np.int64), np.zeros(0, np.int64))
        a, b = points[:-1], points[1:]
        j = np.searchsorted(lo, a, side="right") - 1
        inside = (j >= 0) & (a < hi[np.maximum(j, 0)])
        a, b = a[inside], b[inside]
        starts, lengths = self[a], b - a
        # a run cut only at an index boundary continues in the next piece: join them
        joined = np.r_[False, starts[1:] == starts[:-1] + lengths[:-1]]
        group = np.cumsum(~joined) - 1
        return Runs(starts[~joined], np.bincount(group, weights=lengths).astype(np.int64))


def _unserved(slot: SlotPlan, count: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Sequence index intervals ``(lo, hi)``, ascending, of a (contiguous) slot's span that its first
    ``count`` cells left unserved: the slot served its whole windows (one run per lane) and part of one
    more window (its cells, merged into runs); the rest of the span is what is left."""
    offsets = slot.window_offsets
    full = int(np.searchsorted(offsets, count, side="right") - 1)
    rest = count - int(offsets[full])
    lane_len = -(-slot.n_cells // slot.lanes)
    base = np.arange(slot.lanes, dtype=np.int64) * lane_len
    lo = base
    hi = np.minimum(base + min(full * slot.lane_cells, lane_len), slot.n_cells)
    lo, hi = slot.to_sequence(lo), slot.to_sequence(hi)
    cells = np.sort(slot.to_sequence(slot.window_positions(full)[:rest])) if rest else np.zeros(0, np.int64)
    cut = np.flatnonzero(np.diff(cells) != 1) + 1  # the partly served window's cells as runs
    first, last = np.r_[0, cut], np.r_[cut, len(cells)] - 1
    lo = np.concatenate([lo, cells[first]]) if len(cells) else lo
    hi = np.concatenate([hi, cells[last] + 1]) if len(cells) else hi
    lo, hi = np.minimum(lo, n), np.minimum(hi, n)  # pad repeats consumed nothing new
    keep = hi > lo
    order = np.argsort(lo[keep], kind="stable")
    lo, hi = lo[keep][order], hi[keep][order]
    # what the slot left: the gaps between its served intervals, within its span
    first, end = slot.to_sequence(np.zeros(1, np.int64))[0], min(slot.to_sequence(np.array([slot.n_cells]))[0], n)
    gap_lo, gap_hi = np.r_[first, hi], np.r_[lo, end]
    keep = gap_hi > gap_lo
    return gap_lo[keep], gap_hi[keep]


def remaining_sequence(
    n: int,
    stages: Sequence[Stage],
    *,
    seed: int,
    epoch: int,
    lanes: int,
    lane_cells: int,
    tokens: np.ndarray | None = None,
) -> np.ndarray | Runs:
    """Epoch-sequence positions not yet served after the given (finished) stages, in sequence order.

    A ``Stage`` is a part of the epoch run with one world, each rank having consumed ``batches``
    batches. The positions a later stage serves come from this sequence, so a job resumed on another
    world size serves every remaining cell exactly once. Without ``tokens`` the result is ``Runs``
    (O(slots x window) memory); token-balanced stages deal chunks, not spans, and keep an array.
    """
    if tokens is not None:
        return _remaining_dense(n, stages, seed=seed, epoch=epoch, lanes=lanes, lane_cells=lane_cells, tokens=tokens)
    seq = Runs(np.zeros(1, np.int64), np.array([n], np.int64))
    for i, st in enumerate(stages):
        m = len(seq)
        slots = plan_slots(
            m,
            world_size=st.world_size,
            num_workers=st.num_workers,
            batch_size=st.batch_size,
            seed=seed,
            epoch=epoch,
            policy=st.policy,
            lanes=lanes,
            lane_cells=lane_cells,
            stage=i,
        )
        per_worker = worker_batches(st.batches, st.num_workers)
        pieces = [_unserved(slot, per_worker[slot.slot % len(per_worker)] * slot.batch_size, m) for slot in slots]
        tail = min(slots[-1].to_sequence(np.array([slots[-1].n_cells]))[0] if slots else 0, m)
        if tail < m:
            pieces.append((np.array([tail]), np.array([m])))  # a drop remainder is left too
        lo = np.concatenate([p[0] for p in pieces] + [np.zeros(0, np.int64)])
        hi = np.concatenate([p[1] for p in pieces] + [np.zeros(0, np.int64)])
        del pieces
        seq = seq.take(lo, hi)
    return seq


def _remaining_dense(
    n: int,
    stages: Sequence[Stage],
    *,
    seed: int,
    epoch: int,
    lanes: int,
    lane_cells: int,
    tokens: np.ndarray | None = None,
) -> np.ndarray:
    """``remaining_sequence`` as an array of positions (token-balanced stages; without tokens, the
    reference the runs are tested against)."""
    seq = np.arange(n, dtype=np.int64)
    for i, st in enumerate(stages):
        slots = plan_slots(
            len(seq),
            world_size=st.world_size,
            num_workers=st.num_workers,
            batch_size=st.batch_size,
            seed=seed,
            epoch=epoch,
            policy=st.policy,
            lanes=lanes,
            lane_cells=lane_cells,
            stage=i,
            tokens=None if tokens is None else tokens[seq],
        )
        per_worker = worker_batches(st.batches, st.num_workers)
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


def start_position(
    resume: Resume | None, epoch: int, worker: int, num_workers: int
) -> tuple[tuple[Stage, ...], int, int]:
    """``(finished stages, slot role, batches that role has served)`` for a worker starting ``epoch``.

    A rank-independent resume (``per_rank``) names the batches the rank consumed: the DataLoader asks
    worker 0 first, so worker ``w`` plays the role that serves global batch ``total + w`` of the
    uninterrupted round-robin order. A per-worker resume is that worker's own count.
    """
    if resume is None or resume.epoch != epoch:
        return (), worker, 0
    if not resume.per_rank:
        return resume.stages, worker, resume.batches
    k = max(num_workers, 1)
    role = (worker + resume.batches) % k
    return resume.stages, role, worker_batches(resume.batches, k)[role]
