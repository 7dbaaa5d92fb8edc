"""Weighted and with-replacement epochs planned per shard, in O(shards) memory, cells drawn lazily.

A weighted draw used to give every cell of the corpus a probability and a serve count in every loader
process (~20 B a cell: 3 GB at 160M cells). Here it is split in two levels, both pure functions of
(seed, epoch, the manifest):

1. **Per class, then per shard** (planning, in every process, O(shards x classes present)): every cell
   of class ``g`` is served ``full[g]`` times, and once more with probability ``extra[g]``. With
   replacement, a cell of draw probability ``p`` is served ``n * p`` times in expectation: the whole part
   for sure, the fraction as a chance (residual resampling: the expectation of ``n`` independent draws,
   with less variance and without a rare cell's copies landing side by side). Without replacement,
   every positive cell ``n // P`` times and ``n % P`` more with probability ``min(1, t * p)``. A shard's
   layer ``j`` of whole copies is a unit whose size its label counts give (``format.labels``); its extra
   cells are one more unit, whose size is the shard's expected extras rounded systematically (the floor
   or the ceiling, the total exact).
2. **Per cell** (``resolve_unit``, only in a process that reads the shard, from the shard's own labels):
   which cells a unit holds. Seeded by ``(seed, epoch, shard, kind, copy)``, so every process that
   resolves a unit gets the same cells.

Every unit's size is known before a byte is read, so the slot plan (equal batch counts, exact resume,
elastic re-plans) is exact; each cell's expected serve count is what the per-cell draw gave.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from ..errors import ShardError
from .epoch import EpochPlan

__all__ = [
    "ALL",
    "DRAW",
    "ClassCounts",
    "StreamDraw",
    "class_inclusion",
    "drawn_plan",
    "resolve_unit",
    "rng_for",
    "systematic",
    "unit_resolver",
]

ALL, DRAW = 0, 1  # a unit's kind: a layer of whole copies, or a shard's extra cells


class ClassCounts(Protocol):
    """Per-shard class counts (``format.labels.LabelCounts`` is one): all a drawn plan reads of them."""

    def totals(self) -> np.ndarray: ...

    def shard_sums(self, per_class: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class _OneClass:
    """Every cell in one class: a uniform draw is a weighted draw with one weight."""

    shard_cells: np.ndarray

    def totals(self) -> np.ndarray:
        return np.array([int(self.shard_cells.sum())])

    def shard_sums(self, per_class: np.ndarray) -> np.ndarray:
        return self.shard_cells.astype(np.float64) * float(per_class[0])


@dataclass(frozen=True)
class StreamDraw:
    """What one stream's draw needs: its shards' label counts and the draw weight of one cell of each
    class (None for both: every cell alike)."""

    counts: ClassCounts | None = None
    per_class: np.ndarray | None = None


def class_inclusion(weights: np.ndarray, sizes: np.ndarray, total: float) -> np.ndarray:
    """Inclusion probability of a cell of each class, ``min(1, t * weights)``, with ``t`` such that
    ``sum(sizes * pi) == total`` (water-filling: the heaviest classes are capped at 1 first)."""
    w = np.asarray(weights, dtype=np.float64)
    n = np.asarray(sizes, dtype=np.float64)
    pi = np.zeros(len(w))
    live = np.flatnonzero((w > 0) & (n > 0))
    if total <= 0 or not len(live):
        return pi
    order = live[np.argsort(-w[live], kind="stable")]
    capped_n = np.concatenate([[0.0], np.cumsum(n[order])])  # cells of the first k classes (capped at 1)
    rest_nw = np.concatenate([np.cumsum((n * w)[order][::-1])[::-1], [0.0]])  # sum n*w of classes k..
    if total >= capped_n[-1] - 1e-9:
        pi[live] = 1.0
        return pi
    for k in range(len(order)):  # k classes capped; O(classes)
        t = (total - capped_n[k]) / rest_nw[k]
        if t * w[order[k]] <= 1.0:
            pi[order[:k]] = 1.0
            pi[order[k:]] = t * w[order[k:]]
            return pi
    raise AssertionError("unreachable: total < capacity")


def systematic(expected: np.ndarray, u: float) -> np.ndarray:
    """Integers ``k`` with ``sum(k) == round(sum(expected))`` and each ``k[i]`` the floor or the ceiling of
    ``expected[i]``, with ``E[k[i]] == expected[i]`` for ``u`` uniform in [0, 1) (systematic sampling)."""
    c = np.cumsum(np.asarray(expected, dtype=np.float64))
    if not len(c):
        return np.zeros(0, np.int64)
    total = round(float(c[-1]))
    if c[-1] > 0:
        c = c * (total / c[-1])
    c[-1] = total
    edges = np.floor(np.concatenate([[0.0], c]) + u)
    return np.diff(edges).astype(np.int64)


def drawn_plan(
    shard_cells: np.ndarray,
    stream_shards: Sequence[int],
    wanted: Sequence[int],
    draws: Sequence[StreamDraw],
    *,
    replacement: bool,
    seed: int,
    epoch: int,
    where: Sequence[str] | None = None,
    policy: str = "drop",
) -> tuple[EpochPlan, list[tuple[np.ndarray, np.ndarray]]]:
    """The epoch's units, and per stream ``(full, extra)`` by class: every cell of class ``g`` is served
    ``full[g]`` times, and once more with probability ``extra[g]``.

    With replacement a cell of draw probability ``p`` is served ``n * p`` times in expectation: the whole
    part for sure, the fraction as a chance (residual resampling: the expectation of ``n`` independent
    draws, with less variance). Without replacement every positive cell is served ``n // P`` times and
    ``n % P`` more are included with probability ``min(1, t * p)``.
    """
    shard_cells = np.asarray(shard_cells, dtype=np.int64)
    bounds = np.concatenate([[0], np.cumsum(np.asarray(stream_shards, dtype=np.int64))])
    if bounds[-1] != len(shard_cells):
        raise ShardError(f"streams hold {int(bounds[-1])} shards, the set {len(shard_cells)}")
    shards, sizes, copies, kinds, per_stream = [], [], [], [], []

    def add(ids: np.ndarray, size: np.ndarray, copy: int, kind: int, repeat: int = 1) -> None:
        take = size > 0
        m = int(take.sum())
        shards.append(np.tile(ids[take], repeat))
        sizes.append(np.tile(size[take], repeat))
        copies.append(np.repeat(np.arange(copy, copy + repeat, dtype=np.int32), m))
        kinds.append(np.full(m * repeat, kind, np.int8))

    for k, (n, draw) in enumerate(zip(wanted, draws, strict=True)):
        lo, hi = int(bounds[k]), int(bounds[k + 1])
        cells = shard_cells[lo:hi]
        counts = draw.counts if draw.per_class is not None else _OneClass(cells)
        p = np.asarray(draw.per_class, np.float64) if draw.per_class is not None else np.array([1.0 / cells.sum()])
        class_n = counts.totals()
        positive = int(class_n[p > 0].sum())
        if n and not positive:
            name = where[k] if where else f"stream {k}"
            raise ShardError(f"{name}: every cell has weight 0, nothing to draw {n} cells from")
        if replacement:
            mu = n * p / float((p * class_n).sum())
            full = np.floor(mu + 1e-9).astype(np.int64)
            extra = np.clip(mu - full, 0.0, 1.0)
        else:
            whole, rest = divmod(int(n), positive)
            full = np.where((p > 0) & (class_n > 0), whole, 0).astype(np.int64)
            extra = class_inclusion(p, class_n, rest)
        ids = np.arange(lo, hi)
        done = 0
        for level in np.unique(full[full > 0]).tolist():  # layers done..level-1 hold the same cells
            size = np.rint(counts.shard_sums((full >= level).astype(np.float64))).astype(np.int64)
            add(ids, size, done, ALL, level - done)
            done = level
        expected = counts.shard_sums(extra)
        add(ids, systematic(expected, float(rng_for(seed, epoch, k).random())), 0, DRAW)
        per_stream.append((full, extra))
    unit_shard = np.concatenate(shards)
    if not len(unit_shard):
        raise ShardError("the epoch draws no cells")
    unit_size, unit_copy, unit_kind = np.concatenate(sizes), np.concatenate(copies), np.concatenate(kinds)
    perm = np.random.default_rng([seed, epoch, 1]).permutation(len(unit_shard))
    plan = EpochPlan(
        unit_shard[perm], shard_cells, 1, 0, policy, unit_size[perm], None, unit_copy[perm], unit_kind=unit_kind[perm]
    )
    return plan, per_stream


def rng_for(seed: int, epoch: int, stream: int) -> np.random.Generator:
    """The generator of a stream's per-shard rounding (the same stream offset the run plans use)."""
    return np.random.default_rng([seed, epoch, 2, stream])


def resolve_unit(
    kind: int, size: int, copy: int, codes: np.ndarray, full: np.ndarray, extra: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """``(cells, copies)`` of one unit of a shard whose cells have class ``codes``: layer ``copy`` of the
    whole copies (``ALL``: the cells whose class has more than ``copy``), or the ``size`` extra cells
    (``DRAW``: systematic sampling in proportion to ``extra``). Cells ascend, so reads stay runs."""
    if kind == ALL:
        cells = np.flatnonzero(full[codes] > copy)
        return cells, np.full(len(cells), copy, np.int32)
    present = np.bincount(codes, minlength=len(extra))
    q = class_inclusion(extra, present, size)[codes]
    cells = np.flatnonzero(systematic(q, float(rng.random())) > 0)
    if len(cells) != size:  # an invariant: size <= the shard's cells with a chance of an extra serving
        raise ShardError(f"a shard's draw of {size} cells found {len(cells)}")
    return cells, full[codes[cells]].astype(np.int32)


def unit_resolver(
    plan: EpochPlan,
    per_stream: Sequence[tuple[np.ndarray, np.ndarray]],
    stream_of_shard: np.ndarray,
    codes_of: Callable[[int], np.ndarray] | None,
    *,
    seed: int,
    epoch: int,
) -> Callable[[int], tuple[np.ndarray, np.ndarray]]:
    """Unit → (cells, copies), resolved once per process from the shard's class codes (``codes_of``; None
    or a stream without weights: every cell in one class, nothing read)."""
    cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def resolve(u: int) -> tuple[np.ndarray, np.ndarray]:
        hit = cache.get(u)
        if hit is None:
            shard, copy, kind = int(plan.shard_order[u]), int(plan.unit_copy[u]), int(plan.unit_kind[u])
            full, extra = per_stream[int(stream_of_shard[shard])]
            n = int(plan.shard_cells[shard])
            codes = codes_of(shard) if codes_of is not None and len(full) > 1 else np.zeros(n, np.int64)
            rng = np.random.default_rng([seed, epoch, 3, shard, kind, copy])
            hit = cache[u] = resolve_unit(kind, int(plan.unit_cells[u]), copy, codes, full, extra, rng)
        return hit

    return resolve
