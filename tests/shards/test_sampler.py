"""The epoch plan, checked for every rank and worker of simulated jobs (no processes)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shards.plan import plan_epoch, plan_slots


def _served(shard_cells, **kw):
    """Per slot: the (shard, cell, pad) triples it serves, in order."""
    plan, slots = plan_epoch(np.asarray(shard_cells), **kw)
    out = []
    for s in slots:
        pos = np.concatenate([s.to_sequence(s.window_positions(k)) for k in range(s.n_windows)] or [np.zeros(0, int)])
        out.append(plan.locate(pos))
    return plan, slots, out


@settings(max_examples=80, deadline=None)
@given(
    shard_cells=st.lists(st.integers(1, 400), min_size=1, max_size=12),
    world=st.sampled_from([1, 2, 3, 5, 7, 8, 13]),
    workers=st.integers(0, 4),
    batch=st.integers(1, 33),
    epoch=st.integers(0, 5),
    policy=st.sampled_from(["drop", "pad"]),
)
def test_exactly_once_and_equal_batches(shard_cells, world, workers, batch, epoch, policy):
    _, slots, served = _served(
        shard_cells, world_size=world, num_workers=workers, batch_size=batch, seed=3, epoch=epoch, policy=policy
    )
    n = sum(shard_cells)
    assert len({s.n_batches for s in slots}) == 1  # every rank and worker: the same number of batches
    assert all(s.n_cells % batch == 0 for s in slots)
    real = [(int(a), int(b)) for sh, c, pad in served for a, b in zip(sh[~pad], c[~pad], strict=True)]
    assert len(real) == len(set(real))  # nobody serves a cell twice
    assert all(0 <= c < shard_cells[s] for s, c in real)
    slots_total = world * max(workers, 1) * batch
    if policy == "drop":
        assert n - len(real) < slots_total and sum(int(p.sum()) for _, _, p in served) == 0
    else:
        assert len(real) == n and sum(int(p.sum()) for _, _, p in served) < slots_total


@pytest.mark.parametrize("world", [1, 2, 31, 64])
def test_large_worlds_and_tiny_shard_sets(world):
    _, slots, served = _served([5, 3], world_size=world, num_workers=8, batch_size=1, seed=0, epoch=0, policy="pad")
    assert {s.n_batches for s in slots} == {1}
    assert sum(len(sh) for sh, _, _ in served) == world * 8


def test_epochs_rotate_shards_and_change_dropped_cells():
    cells = [100] * 8 + [37]
    plans = [_served(cells, world_size=2, num_workers=1, batch_size=16, seed=1, epoch=e)[2] for e in range(4)]
    first_shard_rank0 = {int(p[0][0][0]) for p in plans}
    assert len(first_shard_rank0) > 1  # shard-to-rank assignment changes between epochs
    dropped = []
    for served in plans:
        real = {(int(a), int(b)) for sh, c, _ in served for a, b in zip(sh, c, strict=True)}
        dropped.append(frozenset({(s, c) for s in range(9) for c in range(cells[s])} - real))
    assert len(set(dropped)) > 1


def test_plan_is_deterministic_and_seeded():
    a = _served([50, 60, 70], world_size=2, num_workers=2, batch_size=4, seed=9, epoch=1)[2]
    b = _served([50, 60, 70], world_size=2, num_workers=2, batch_size=4, seed=9, epoch=1)[2]
    c = _served([50, 60, 70], world_size=2, num_workers=2, batch_size=4, seed=10, epoch=1)[2]
    assert all(np.array_equal(x[1], y[1]) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x[1], y[1]) for x, y in zip(a, c, strict=True))


@pytest.mark.parametrize("bad", [{"world_size": 0}, {"batch_size": 0}, {"num_workers": -1}, {"policy": "wrap"}])
def test_bad_settings_name_the_knob(bad):
    kw = {"world_size": 1, "num_workers": 0, "batch_size": 4, "seed": 0, "epoch": 0, "policy": "drop", **bad}
    with pytest.raises(ValueError, match=next(iter(bad))):
        plan_epoch(np.array([10]), **kw)


@pytest.mark.parametrize(("world", "workers"), [(2, 0), (3, 2), (7, 1)])
def test_token_balance_within_one_percent(world, workers):
    rng = np.random.default_rng(0)
    n = int(rng.integers(500, 3000, size=12).sum())
    tokens = np.clip(rng.lognormal(np.log(1500), 0.6, n), 200, 8000).astype(np.int64)  # very unequal cells
    slots = plan_slots(n, world_size=world, num_workers=workers, batch_size=64, seed=1, epoch=0, tokens=tokens)
    k = max(workers, 1)
    per_rank, seen = np.zeros(world), []
    for s in slots:
        pos = np.concatenate([s.to_sequence(s.window_positions(w)) for w in range(s.n_windows)])
        per_rank[s.slot // k] += tokens[pos].sum()
        seen.append(pos)
    seen = np.concatenate(seen)
    assert len(seen) == len(np.unique(seen)) and {s.n_batches for s in slots} == {slots[0].n_batches}
    assert (per_rank.max() - per_rank.min()) / per_rank.mean() <= 0.01
    contiguous = plan_slots(n, world_size=world, num_workers=workers, batch_size=64, seed=1, epoch=0)
    plain = [tokens[s.to_sequence(np.arange(s.n_cells))].sum() for s in contiguous]
    assert (max(plain) - min(plain)) / np.mean(plain) > (per_rank.max() - per_rank.min()) / per_rank.mean()


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(3, 300), min_size=0, max_size=200), st.integers(300, 2000))
def test_budget_batches_fit_and_are_greedy(costs, budget):
    from shards.plan import budget_batches

    ends = budget_batches(np.array(costs), budget).tolist()
    starts = [0, *ends[:-1]] if ends else []
    assert (ends[-1] if ends else 0) == len(costs)
    for a, b in zip(starts, ends, strict=True):
        assert (b - a) * max(costs[a:b]) <= budget
        if b < len(costs):
            assert (b - a + 1) * max(costs[a : b + 1]) > budget  # the next cell would not have fit


def test_distributed_shard_sampler_ranges_cover_once():
    from shards.plan import DistributedShardSampler

    cells = np.array([300, 17, 1000, 45])
    sampler = DistributedShardSampler(cells, batch_size=8, seed=3, remainder="pad")
    seen = []
    for rank in range(3):
        for worker in range(2):
            for shard, a, b, pad in sampler.ranges(world_size=3, rank=rank, num_workers=2, worker_id=worker, epoch=4):
                if not pad:
                    seen += [(shard, c) for c in range(a, b)]
    assert len(seen) == len(set(seen)) == cells.sum()
    with pytest.raises(ValueError, match="rank"):
        sampler.ranges(world_size=2, rank=2, num_workers=0, worker_id=0, epoch=0)


def test_token_balanced_pad_plan_smaller_than_one_round():
    """Fewer cells than slots x batch with ``pad``: the repeats wrap around (this used to raise)."""
    from shards.plan import plan_slots, stream_positions

    slots = plan_slots(
        7, world_size=3, num_workers=2, batch_size=8, seed=1, epoch=0, tokens=np.arange(1, 8), policy="pad"
    )
    served = np.concatenate([s.to_sequence(stream_positions(s, s.n_cells)) for s in slots])
    assert len(served) == 6 * 8 and len(set(served.tolist())) == 48  # every position once, repeats included
    assert set((served % 7).tolist()) == set(range(7))
