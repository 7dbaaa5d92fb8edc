"""Grouped batches: every batch holds cells of one group (e.g. one ``dataset_id``), as a pure function.

A slot reads its cells in its usual order (window by window, so reads stay runs); each cell waits in its
group's bucket until the bucket holds a batch, and batches are served in the order their buckets fill.
The whole schedule is computed up front from the cells' group labels in serving order, so it is exact
to resume and the same on every machine:

- ``group_batches``: one slot's batches as rows of serving-order indices, sorted by the index of the
  cell that completes them. A group's last, partial batch is filled by repeating its own cells
  (``pad``, flagged: zero loss weight) under the ``pad`` remainder policy, or left out under ``drop``.
- ``equalize``: every slot gets the same number of batches (no collective can hang on a short rank):
  ``pad`` adds zero-weight repeats of a slot's first batch, ``drop`` cuts every slot to the shortest.

Under ``pad`` every cell is served exactly once (plus flagged repeats); under ``drop`` at most once.

That schedule needs every slot's labels in every process (to equalize) and its pool can hold up to
(groups x batch) cells. ``bounded_group_batches`` is the atlas-scale alternative (``group_pool_cells``):
a pool of at most ``pool_cells`` cells, full one-group batches whenever a bucket holds a batch, and when
the pool is full the largest bucket topped up from the next largest (a mixed batch). Every slot serves
exactly ``n_cells / batch_size`` batches (equal counts with no label read), every cell exactly once, and
a cell waits at most ``pool_cells + batch_size`` positions; the price is the share of mixed batches,
which falls as the pool grows against (groups x batch) and is measured (``group_purity``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .slots import SlotPlan, stream_positions

__all__ = ["GroupedBatches", "bounded_group_batches", "equalize", "group_batches", "group_purity", "slot_groups"]


@dataclass(frozen=True)
class GroupedBatches:
    """One slot's grouped batches: ``index[b]`` (serving-order positions), ``pad[b]``, ``group[b]``."""

    index: np.ndarray  # (n_batches, batch_size) int64
    pad: np.ndarray  # (n_batches, batch_size) bool: a repeat, served with zero loss weight
    group: np.ndarray  # (n_batches,) group code

    @property
    def n_batches(self) -> int:
        return len(self.index)

    @property
    def ready(self) -> np.ndarray:
        """For each batch, the last serving-order position it needs (it can be cut once that is read)."""
        return self.index.max(axis=1) if self.n_batches else np.zeros(0, np.int64)

    def last_use(self, n: int) -> np.ndarray:
        """For each of the slot's ``n`` positions, the last batch that uses it (-1: none)."""
        out = np.full(n, -1, dtype=np.int64)
        rows = np.repeat(np.arange(self.n_batches), self.index.shape[1] if self.n_batches else 0)
        np.maximum.at(out, self.index.ravel(), rows)
        return out


def group_batches(labels: np.ndarray, batch_size: int, *, policy: str = "pad") -> GroupedBatches:
    """Batches of one group each from a slot's cell labels in serving order."""
    labels = np.asarray(labels, dtype=np.int64)
    b = batch_size
    order = np.argsort(labels, kind="stable")  # grouped; serving order within each group
    g = labels[order]
    heads = np.flatnonzero(np.r_[True, g[1:] != g[:-1]]) if len(g) else np.zeros(0, np.int64)
    sizes = np.diff(np.r_[heads, len(g)])
    full = sizes // b
    rank = np.arange(len(g)) - np.repeat(heads, sizes)
    in_full = rank < np.repeat(full * b, sizes)
    index = order[in_full].reshape(-1, b)
    pad = np.zeros(index.shape, dtype=bool)
    group = g[in_full][::b] if len(index) else np.zeros(0, np.int64)
    if policy == "pad":
        part = sizes % b
        have = np.flatnonzero(part)
        if len(have):
            cols = np.arange(b)[None, :]
            base = (heads + full * b)[have][:, None]
            extra = order[base + cols % part[have][:, None]]
            index = np.concatenate([index, extra])
            pad = np.concatenate([pad, cols >= part[have][:, None]])
            group = np.concatenate([group, g[heads[have]]])
    index = index.astype(np.int64)
    ready = index.max(axis=1) if len(index) else np.zeros(0, np.int64)
    served = np.lexsort((group, ready))
    return GroupedBatches(index[served], pad[served], group[served])


def equalize(slots: list[GroupedBatches], policy: str = "pad") -> list[GroupedBatches]:
    """The same number of batches for every slot."""
    counts = [s.n_batches for s in slots]
    if not counts:
        return slots
    if policy == "drop":
        n = min(counts)
        return [GroupedBatches(s.index[:n], s.pad[:n], s.group[:n]) for s in slots]
    n = max(counts)
    out = []
    for s in slots:
        short = n - s.n_batches
        if short and not s.n_batches:
            raise ValueError("a slot has no cells to pad its grouped batches from")
        if short:
            s = GroupedBatches(
                np.concatenate([s.index, np.repeat(s.index[:1], short, axis=0)]),
                np.concatenate([s.pad, np.ones((short, s.index.shape[1]), dtype=bool)]),
                np.concatenate([s.group, np.repeat(s.group[:1], short)]),
            )
        out.append(s)
    return out


def slot_groups(
    codes: np.ndarray, seq: np.ndarray, slots: Sequence[SlotPlan], index: int, batch_size: int, policy: str
) -> GroupedBatches:
    """Slot ``index``'s grouped batches, equalized over all ``slots``. ``codes``: every epoch position's
    group code; ``seq``: the stage's sequence (positions past it are pad repeats, wrapping around)."""
    n = len(seq)

    def labels(slot: SlotPlan) -> np.ndarray:
        at = slot.to_sequence(stream_positions(slot, slot.n_cells))
        return codes[seq[np.where(at >= n, at - n, at) % n]]

    return equalize([group_batches(labels(s), batch_size, policy=policy) for s in slots], policy)[index]


def bounded_group_batches(labels: np.ndarray, batch_size: int, pool_cells: int) -> GroupedBatches:
    """One slot's batches from its cells' labels in serving order, with at most ``pool_cells`` cells
    waiting. ``len(labels)`` must be a multiple of ``batch_size`` (a slot's share is)."""
    labels = np.asarray(labels, dtype=np.int64)
    b, n = batch_size, len(labels)
    if n % b:
        raise ValueError(f"{n} cells are not a whole number of batches of {b}")
    if pool_cells < b:
        raise ValueError(f"group_pool_cells={pool_cells}: must be at least batch_size={b}")
    codes, local = np.unique(labels, return_inverse=True)
    buckets: list[list[np.ndarray]] = [[] for _ in codes]  # per group: arrays of waiting positions
    size = np.zeros(len(codes), dtype=np.int64)
    rows, groups = [], []

    def take(g: int, k: int) -> np.ndarray:
        waiting = np.concatenate(buckets[g])
        buckets[g] = [waiting[k:]] if k < len(waiting) else []
        size[g] -= k
        return waiting[:k]

    def emit() -> None:
        """One batch: the largest bucket, topped up from the next largest when it holds fewer than b."""
        order = np.argsort(-size, kind="stable")
        need, parts = b, []
        for g in order.tolist():
            if not need or not size[g]:
                break
            k = min(need, int(size[g]))
            parts.append(take(g, k))
            need -= k
        rows.append(np.concatenate(parts))
        groups.append(int(codes[order[0]]))

    held = 0
    for lo in range(0, n, b):  # a batch's worth of cells enters the pool at a time
        chunk = local[lo : lo + b]
        present = np.unique(chunk)
        for g in present.tolist():
            at = lo + np.flatnonzero(chunk == g)
            buckets[g].append(at)
            size[g] += len(at)
        held += len(chunk)
        while (size >= b).any():  # full one-group batches first
            g = int(np.argmax(size >= b))
            rows.append(take(g, b))
            groups.append(int(codes[g]))
            held -= b
        while held > pool_cells:
            emit()
            held -= b
    while held:
        emit()
        held -= b
    index = np.stack(rows) if rows else np.zeros((0, b), np.int64)
    return GroupedBatches(index.astype(np.int64), np.zeros(index.shape, dtype=bool), np.asarray(groups, np.int64))


def group_purity(batches: GroupedBatches, labels: np.ndarray) -> float:
    """The share of a slot's cells that sit in a batch with their batch's group (1.0: every batch is of
    one group)."""
    if not batches.n_batches:
        return 1.0
    real = ~batches.pad
    same = np.asarray(labels)[batches.index] == batches.group[:, None]
    return float((same & real).sum() / real.sum())
