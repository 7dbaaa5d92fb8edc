"""The sampler at atlas scale, without data: 100M cells in 50k shards over 1,024 ranks x 8 workers.

Everything the ``DistributedShardSampler`` decides is a pure function of shard sizes (and, for token
balancing, per-cell token counts), so the plan of a job far larger than this machine can be computed and
checked here: how long one rank takes to plan its epoch, that every cell is served exactly once (the
dropped remainder aside), how evenly cells and tokens fall on ranks, and an elastic re-plan from 1,024
to 512 ranks in the middle of the epoch. Per-cell token counts are drawn from a Census-like distribution:
lognormal around ~1,950 nonzero genes per cell, heavy-tailed, clipped to [100, 30,000].
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from shards.plan import Stage, plan_epoch, plan_slots, remaining_sequence, stream_positions, worker_batches

from .report import Result

__all__ = ["ScaleSpec", "census_like_tokens", "run"]

MEAN_GENES = 1_950


@dataclass(frozen=True)
class ScaleSpec:
    cells: int = 100_000_000
    shards: int = 50_000
    world: int = 1_024
    workers: int = 8
    batch: int = 64
    elastic_world: int = 512
    seed: int = 0


def census_like_tokens(n: int, rng: np.random.Generator, sigma: float = 0.75) -> np.ndarray:
    """Per-cell token counts with mean ~``MEAN_GENES`` and a lognormal tail."""
    mu = np.log(MEAN_GENES) - sigma**2 / 2
    return np.clip(rng.lognormal(mu, sigma, n), 100, 30_000).astype(np.int32)


def _served(slots) -> list[np.ndarray]:
    """Sequence positions each slot serves over the whole epoch."""
    return [slot.to_sequence(stream_positions(slot, slot.n_cells)) for slot in slots]


def run(spec: ScaleSpec) -> list[Result]:
    rng = np.random.default_rng(spec.seed)
    shard_cells = np.full(spec.shards, spec.cells // spec.shards, dtype=np.int64)
    shard_cells[: spec.cells % spec.shards] += 1
    tokens_by_cell = census_like_tokens(spec.cells, rng)
    starts = np.concatenate([[0], np.cumsum(shard_cells)])
    cfg = {
        "cells": spec.cells,
        "shards": spec.shards,
        "ranks": spec.world,
        "workers": spec.workers,
        "batch_size": spec.batch,
        "mean_tokens_per_cell": float(tokens_by_cell.mean()),
    }

    # -- what one rank computes: the epoch's shard order, the token-balanced slots, its own 8 streams
    t0 = time.perf_counter()
    plan, _ = plan_epoch(
        shard_cells, world_size=spec.world, num_workers=spec.workers, batch_size=spec.batch, seed=spec.seed, epoch=0
    )
    seq_tokens = np.concatenate([tokens_by_cell[starts[s] : starts[s + 1]] for s in plan.shard_order])
    slots = plan_slots(
        plan.n_cells,
        world_size=spec.world,
        num_workers=spec.workers,
        batch_size=spec.batch,
        seed=spec.seed,
        epoch=0,
        tokens=seq_tokens,
    )
    rank0 = _served(slots[: spec.workers])
    plan_seconds = time.perf_counter() - t0
    assert sum(len(p) for p in rank0) == spec.workers * slots[0].n_cells

    # -- every rank's plan: exactly once, balance
    served = _served(slots)
    counts = np.bincount(np.concatenate(served), minlength=plan.n_cells)
    once = int((counts == 1).sum())
    twice = int((counts > 1).sum())
    dropped = int((counts == 0).sum())
    per_rank_cells = np.array(
        [sum(len(p) for p in served[r * spec.workers : (r + 1) * spec.workers]) for r in range(spec.world)]
    )
    per_rank_tokens = np.array(
        [
            sum(int(seq_tokens[p].sum()) for p in served[r * spec.workers : (r + 1) * spec.workers])
            for r in range(spec.world)
        ]
    )
    cell_imbalance = per_rank_cells.max() / per_rank_cells.mean() - 1
    token_imbalance = per_rank_tokens.max() / per_rank_tokens.mean() - 1
    # the same plan without token balancing (contiguous spans), for comparison
    plain = plan_slots(
        plan.n_cells, world_size=spec.world, num_workers=spec.workers, batch_size=spec.batch, seed=spec.seed, epoch=0
    )
    plain_tokens = np.array(
        [
            sum(
                int(seq_tokens[s.span_start : s.span_start + s.n_cells].sum())
                for s in plain[r * spec.workers : (r + 1) * spec.workers]
            )
            for r in range(spec.world)
        ]
    )
    plain_imbalance = plain_tokens.max() / plain_tokens.mean() - 1

    # -- elastic: half of the epoch on `world` ranks, the rest re-planned on `elastic_world`
    t0 = time.perf_counter()
    stage0 = Stage(spec.world, spec.workers, spec.batch, "drop", slots[0].n_batches * spec.workers // 2)
    rest = remaining_sequence(
        plan.n_cells,
        [stage0],
        seed=spec.seed,
        epoch=0,
        lanes=slots[0].lanes,
        lane_cells=slots[0].lane_cells,
        tokens=seq_tokens,
    )
    slots1 = plan_slots(
        len(rest),
        world_size=spec.elastic_world,
        num_workers=spec.workers,
        batch_size=spec.batch,
        seed=spec.seed,
        epoch=0,
        stage=1,
        tokens=seq_tokens[rest],
    )
    replan_seconds = time.perf_counter() - t0
    per_worker0 = worker_batches(stage0.batches, spec.workers)
    first = [s.to_sequence(stream_positions(s, per_worker0[s.slot % spec.workers] * s.batch_size)) for s in slots]
    second = [rest[s.to_sequence(stream_positions(s, s.n_cells))] for s in slots1]
    both = np.bincount(np.concatenate(first + second), minlength=plan.n_cells)
    elastic_twice = int((both > 1).sum())
    elastic_dropped = int((both == 0).sum())
    bound = spec.world * spec.workers * spec.batch + spec.elastic_world * spec.workers * spec.batch

    rows = [
        ("plan time per rank", "seconds", plan_seconds, "s"),
        ("cells served exactly once", "fraction", once / plan.n_cells, ""),
        ("cells served twice or more", "count", twice, "cells"),
        ("cells dropped (remainder)", "count", dropped, "cells"),
        ("remainder bound (ranks x workers x batch)", "count", spec.world * spec.workers * spec.batch, "cells"),
        ("per-rank cell imbalance (max/mean - 1)", "fraction", cell_imbalance, ""),
        ("per-rank token imbalance, token-balanced plan", "fraction", token_imbalance, ""),
        ("per-rank token imbalance, contiguous spans", "fraction", plain_imbalance, ""),
        (f"elastic re-plan {spec.world} -> {spec.elastic_world} ranks", "seconds", replan_seconds, "s"),
        ("elastic: cells served twice or more", "count", elastic_twice, "cells"),
        ("elastic: cells dropped (both remainders)", "count", elastic_dropped, "cells"),
        ("elastic: remainder bound", "count", bound, "cells"),
    ]
    return [Result("scale", name, metric, float(value), unit, cfg) for name, metric, value, unit in rows]
