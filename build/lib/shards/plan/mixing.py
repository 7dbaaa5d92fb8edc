"""The cells of a sampled epoch: stream mixing, repeats and weighted draws, as pure functions.

An epoch over several streams (shard sets), or with weighted cells, is a multiset of cells: each cell is
served ``count[c]`` times (0, 1 or more). Everything here is a function of (stream sizes, stream specs,
per-cell weights, replacement, seed, epoch) only, so every rank and worker computes the same epoch
without talking to the others, and the slot planning of ``sampler.plan_slots`` (equal shares, exact
resume, elastic re-plans) applies unchanged to its sequence.

1. ``stream_counts``: how many cells each stream contributes (MosaicML-style ``weight`` = a share of
   the epoch, ``repeat`` = a multiple of the stream, ``choose`` = a fixed count; ``num_samples`` rescales
   the lot to a fixed epoch size), apportioned exactly (largest remainders).
2. ``draw_counts``: per cell of one stream, how often it is served. Without replacement every cell with
   non-zero weight is served ``n // N`` times and the ``n % N`` extra ones are a weighted draw without
   replacement (Efraimidis-Spirakis keys), or without weights a cyclic run of cells from a random start
   (the cells were shuffled globally at ingest); with replacement, ``n`` independent weighted draws.
3. ``sampled_plan``: the served cells as *units* (copy ``j`` of shard ``i`` = its cells served more than
   ``j`` times, in cell order, so reads stay runs), the units permuted by ``default_rng([seed, epoch, 1])``
   so that every stream and every repeat is spread over the whole epoch.

Long because it holds every stream-mixing rule that must agree with the others: the stream kinds, apportioning
a fixed epoch size, run starts and run plans; all pure and property-tested together."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import ShardError
from .epoch import EpochPlan

__all__ = [
    "STREAM_KINDS",
    "Stream",
    "apportion",
    "draw_counts",
    "run_plan",
    "run_start",
    "sampled_plan",
    "stream_counts",
]

#: how a stream says what it contributes per epoch ("natural": all of it, once)
STREAM_KINDS = ("natural", "weight", "repeat", "choose")
_STREAM_KEYS = ("path", "weight", "proportion", "repeat", "choose", "split", "name")


@dataclass(frozen=True)
class Stream:
    """One shard set of a mix. Give at most one of ``weight``, ``repeat`` and ``choose``; none: the
    whole stream once per epoch."""

    path: str
    """The shard set: a directory or a URL (``https://``, ``s3://``)."""
    weight: float | None = None
    """A share of the epoch (MosaicML's proportion): give every stream a weight, or none."""
    repeat: float | None = None
    """The stream's cells this many times per epoch (``1.5``: every cell once, half of them twice)."""
    choose: int | None = None
    """Exactly this many of the stream's cells per epoch."""
    split: str | None = None
    """The stream's split (default: the loader's)."""
    name: str | None = None
    """A name for messages and for the run's ``gene_medians.<name>.csv`` (default: ``stream<i>``)."""
    proportion: float | None = None
    """Another name for ``weight`` (MosaicML Streaming's); read as weight."""

    def __post_init__(self) -> None:
        if not self.path:
            raise ShardError("a stream needs a path (the shard set), e.g. {path: out/zarr, weight: 0.5}")
        given = [k for k in ("weight", "proportion", "repeat", "choose") if getattr(self, k) is not None]
        if len(given) > 1:
            raise ShardError(f"give one of weight, repeat or choose, not {given}")
        weight = self.weight if self.proportion is None else self.proportion
        object.__setattr__(self, "path", str(self.path))
        object.__setattr__(self, "weight", None if weight is None else float(weight))
        object.__setattr__(self, "proportion", None)
        object.__setattr__(self, "repeat", None if self.repeat is None else float(self.repeat))
        object.__setattr__(self, "choose", None if self.choose is None else int(self.choose))

    @classmethod
    def parse(cls, spec: dict[str, Any] | str | Stream, where: str) -> Stream:
        """A stream from a path, a mapping or a ``Stream``; errors name ``where`` (e.g. ``streams[1]``)."""
        if isinstance(spec, Stream):
            return spec
        if isinstance(spec, str):
            return cls(spec)
        if not isinstance(spec, dict) or not spec.get("path"):
            raise ShardError(f"{where}: a stream needs a path (the shard set), e.g. {{path: out/zarr, weight: 0.5}}")
        unknown = sorted(set(spec) - set(_STREAM_KEYS))
        if unknown:
            raise ShardError(f"{where}.{unknown[0]}: unknown key; use path, weight, repeat, choose, split, name")
        try:
            return cls(**spec)
        except ShardError as exc:
            raise ShardError(f"{where}: {exc}") from None

    def kind(self) -> tuple[str, float]:
        """``(kind, value)``: how the stream contributes (``STREAM_KINDS``)."""
        for kind in STREAM_KINDS[1:]:
            value = getattr(self, kind)
            if value is not None:
                return kind, float(value)
        return "natural", 1.0


def apportion(shares: np.ndarray, total: int) -> np.ndarray:
    """Integers proportional to ``shares`` that sum to exactly ``total`` (largest remainders, ties to
    the lower index)."""
    shares = np.asarray(shares, dtype=np.float64)
    if total < 0 or (shares < 0).any() or shares.sum() <= 0:
        raise ShardError(f"cannot apportion {total} cells over shares {shares.tolist()}")
    exact = shares / shares.sum() * total
    out = np.floor(exact).astype(np.int64)
    short = int(total - out.sum())
    if short:
        out[np.argsort(-(exact - out), kind="stable")[:short]] += 1
    return out


def stream_counts(
    sizes: Sequence[int], specs: Sequence[tuple[str, float]], num_samples: int | None = None
) -> np.ndarray:
    """Cells each stream contributes to an epoch. ``specs[s]`` is ``(kind, value)`` with kind in
    ``STREAM_KINDS``. Weights are shares of the epoch (of ``num_samples``, default the streams' total
    size) and exclude the other kinds; repeats and chooses are absolute and, with ``num_samples``,
    are rescaled to it keeping their ratios."""
    sizes = np.asarray(sizes, dtype=np.int64)
    kinds = [k for k, _ in specs]
    for (kind, value), size in zip(specs, sizes, strict=True):
        if kind not in STREAM_KINDS:
            raise ShardError(f"stream kind {kind!r}: choose one of {list(STREAM_KINDS)}")
        if kind != "natural" and not (value >= 0 and np.isfinite(value)):
            raise ShardError(f"stream {kind}={value}: must be a finite number >= 0")
        if kind == "choose" and value != int(value):
            raise ShardError(f"stream choose={value}: must be a whole number of cells")
        if size < 1:
            raise ShardError("a stream has no cells in this split")
    if "weight" in kinds and set(kinds) != {"weight"}:
        raise ShardError(
            "give every stream a weight, or none: weights are shares of the epoch and do not mix "
            "with repeat/choose (use repeat or choose on all streams for absolute counts)"
        )
    if num_samples is not None and num_samples < 1:
        raise ShardError(f"num_samples={num_samples}: must be at least 1")
    if set(kinds) == {"weight"}:
        weights = np.array([v for _, v in specs], dtype=np.float64)
        if weights.sum() <= 0:
            raise ShardError("stream weights sum to 0: give at least one stream a positive weight")
        return apportion(weights, int(num_samples if num_samples is not None else sizes.sum()))
    base = np.array(
        [
            size if kind == "natural" else round(value * size) if kind == "repeat" else int(value)
            for (kind, value), size in zip(specs, sizes, strict=True)
        ],
        dtype=np.int64,
    )
    if base.sum() < 1:
        raise ShardError("the streams contribute no cells (every repeat/choose is 0)")
    return base if num_samples is None else apportion(base.astype(np.float64), int(num_samples))


def draw_counts(
    n: int, weights: np.ndarray | None, size: int, *, replacement: bool, rng: np.random.Generator, where: str = "stream"
) -> np.ndarray:
    """How often each of ``size`` cells is served when ``n`` are drawn (``weights`` None: uniform;
    cells of weight 0 are never served)."""
    if weights is None:
        if replacement:
            return np.bincount(rng.integers(0, size, n), minlength=size).astype(np.int32)
        # a cyclic run from a random start: ingest shuffled the cells globally, so a run is a uniform
        # sample (each cell is in with probability rest / size) that reads as runs, not scattered cells
        full, rest = divmod(n, size)
        counts = np.full(size, full, dtype=np.int32)
        counts[(int(rng.integers(size)) + np.arange(rest)) % size] += 1
        return counts
    w = np.asarray(weights, dtype=np.float64)
    if len(w) != size or not np.isfinite(w).all() or (w < 0).any():
        raise ShardError(f"{where}: cell weights must be {size} finite values >= 0")
    positive = np.flatnonzero(w > 0)
    if n and not len(positive):
        raise ShardError(f"{where}: every cell has weight 0, nothing to draw {n} cells from")
    if replacement:
        cdf = np.cumsum(w)
        picks = np.searchsorted(cdf, rng.random(n) * cdf[-1], side="right")
        return np.bincount(np.minimum(picks, size - 1), minlength=size).astype(np.int32)
    full, rest = divmod(n, len(positive))
    counts = np.zeros(size, dtype=np.int32)
    counts[positive] = full
    if rest:
        keys = np.log(rng.random(len(positive))) / w[positive]  # larger is likelier; top ``rest`` win
        counts[positive[np.argpartition(-keys, rest - 1)[:rest]]] += 1
    return counts


def sampled_plan(
    shard_cells: np.ndarray, counts: np.ndarray, *, seed: int, epoch: int, policy: str = "drop"
) -> EpochPlan:
    """The epoch's units from per-cell serve counts (``counts`` over all shards' cells, shard after shard)."""
    shard_cells = np.asarray(shard_cells, dtype=np.int64)
    counts = np.asarray(counts)
    starts = np.concatenate([[0], np.cumsum(shard_cells)])
    if len(counts) != starts[-1]:
        raise ShardError(f"{len(counts)} cell counts for {int(starts[-1])} cells")
    shards, sizes, cells, copies = [], [], [], []
    active = np.flatnonzero(counts > 0)
    copy = 0
    while active.size:  # copy j: the cells served more than j times; the total work is the epoch's size
        shard = np.searchsorted(starts, active, side="right") - 1
        cuts = np.flatnonzero(np.diff(shard)) + 1
        first = np.r_[0, cuts]
        shards.append(shard[first])
        copies.append(np.full(len(first), copy, dtype=np.int32))
        sizes.append(np.diff(np.r_[first, len(active)]))
        cells.append((active - starts[shard]).astype(np.int32))
        copy += 1
        active = active[counts[active] > copy]
    if not shards:
        raise ShardError("the epoch draws no cells")
    unit_shard, unit_size, unit_copy = np.concatenate(shards), np.concatenate(sizes), np.concatenate(copies)
    buffer = np.concatenate(cells)
    unit_start = np.concatenate([[0], np.cumsum(unit_size)[:-1]])
    perm = np.random.default_rng([seed, epoch, 1]).permutation(len(unit_shard))
    size = unit_size[perm]
    new_start = np.concatenate([[0], np.cumsum(size)[:-1]])
    gather = np.repeat(unit_start[perm] - new_start, size) + np.arange(int(size.sum()))
    cells_in_order = buffer[gather]
    return EpochPlan(unit_shard[perm], shard_cells, 1, 0, policy, size, cells_in_order, unit_copy[perm])


def run_start(size: int, rng: np.random.Generator) -> int:
    """The start of a uniform draw's cyclic run: the one value ``draw_counts`` takes of ``rng`` for a
    draw without weights and without replacement."""
    return int(rng.integers(size))


def run_plan(
    shard_cells: np.ndarray,
    stream_shards: Sequence[int],
    wanted: Sequence[int],
    starts: Sequence[int],
    *,
    seed: int,
    epoch: int,
    policy: str = "drop",
) -> EpochPlan:
    """``sampled_plan`` of uniform draws without replacement, in O(units) memory instead of O(cells).

    Stream ``k`` holds the next ``stream_shards[k]`` shards and contributes ``wanted[k]`` cells: each of
    its cells ``wanted // size`` times and the ``wanted % size`` cells of a cyclic run from ``starts[k]``
    once more (``draw_counts`` without weights, whose counts these are). Copy ``j`` of a shard is then
    the whole shard or one run (two pieces when the run wraps around inside the shard), so a unit is
    (first cell, hole, gap) instead of its cells; the units, their order and their permutation are
    ``sampled_plan``'s exactly, so the epoch is the same, cell for cell.
    """
    shard_cells = np.asarray(shard_cells, dtype=np.int64)
    cell_start = np.concatenate([[0], np.cumsum(shard_cells)])
    bounds = np.concatenate([[0], np.cumsum(np.asarray(stream_shards, dtype=np.int64))])
    if bounds[-1] != len(shard_cells):
        raise ShardError(f"streams hold {int(bounds[-1])} shards, the set {len(shard_cells)}")
    stream_of = np.repeat(np.arange(len(wanted)), np.diff(bounds))
    lo_cell = cell_start[bounds[:-1]]  # each stream's first cell (global)
    size = cell_start[bounds[1:]] - lo_cell
    full, rest = np.divmod(np.asarray(wanted, dtype=np.int64), np.maximum(size, 1))
    # each stream's run [start, start + rest) in its own cells, as up to two global intervals
    run_lo = lo_cell + np.asarray(starts, dtype=np.int64)
    run_hi = np.minimum(run_lo + rest, lo_cell + size)
    wrap_hi = lo_cell + np.maximum(0, np.asarray(starts) + rest - size)  # the wrapped part [lo, wrap_hi)
    s_lo, s_hi = cell_start[:-1], cell_start[1:]
    a = np.clip(run_lo[stream_of], s_lo, s_hi)  # the part of the run from its start, in each shard
    b = np.clip(run_hi[stream_of], s_lo, s_hi)
    c = np.clip(lo_cell[stream_of], s_lo, s_hi)  # the wrapped part, in each shard
    d = np.clip(wrap_hi[stream_of], s_lo, s_hi)
    first_piece, second_piece = np.maximum(b - a, 0), np.maximum(d - c, 0)
    shards, sizes, copies, firsts, holes, gaps = [], [], [], [], [], []
    for j in range(int(full.max()) + 1 if len(full) else 0):
        whole = full[stream_of] > j
        partial = (full[stream_of] == j) & (rest[stream_of] > 0)
        n_part = first_piece + second_piece
        take = whole | (partial & (n_part > 0))
        idx = np.flatnonzero(take)
        if not len(idx):
            continue
        is_whole = whole[idx]
        # a partial unit's cells ascending: the wrapped piece [c, d) comes first when both exist
        has_wrap = second_piece[idx] > 0
        first = np.where(is_whole, 0, np.where(has_wrap, c[idx], a[idx]) - s_lo[idx])
        hole = np.where(is_whole | ~has_wrap | (first_piece[idx] == 0), np.iinfo(np.int64).max, second_piece[idx])
        gap = np.where(hole == np.iinfo(np.int64).max, 0, a[idx] - d[idx])
        shards.append(idx)
        sizes.append(np.where(is_whole, shard_cells[idx], n_part[idx]))
        copies.append(np.full(len(idx), j, dtype=np.int32))
        firsts.append(first)
        holes.append(hole)
        gaps.append(gap)
    if not shards:
        raise ShardError("the epoch draws no cells")
    unit_shard, unit_size, unit_copy = np.concatenate(shards), np.concatenate(sizes), np.concatenate(copies)
    perm = np.random.default_rng([seed, epoch, 1]).permutation(len(unit_shard))
    return EpochPlan(
        unit_shard[perm],
        shard_cells,
        1,
        0,
        policy,
        unit_size[perm],
        None,
        unit_copy[perm],
        np.concatenate(firsts)[perm],
        np.concatenate(holes)[perm],
        np.concatenate(gaps)[perm],
    )
