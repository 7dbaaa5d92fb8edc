"""Property-based tests (hypothesis) of the planner over random shapes: exactly once and equal batch
counts with token balancing, and after an elastic change of world size."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from shards.plan import (
    Resume,
    SlotOptions,
    Stage,
    Topology,
    plan_slots,
    plan_worker,
    remaining_sequence,
    start_position,
    stream_positions,
    worker_batches,
)


def _served(slots, n):
    per_slot = [s.to_sequence(stream_positions(s, s.n_cells)) for s in slots]
    return per_slot, np.concatenate(per_slot) if per_slot else np.zeros(0, np.int64)


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(0, 3000),
    world=st.sampled_from([1, 2, 3, 5, 8]),
    workers=st.integers(0, 3),
    batch=st.integers(1, 40),
    policy=st.sampled_from(["drop", "pad"]),
    seed=st.integers(0, 2**16),
)
def test_token_balanced_plans_serve_each_cell_once_in_equal_batches(n, world, workers, batch, policy, seed):
    tokens = np.random.default_rng(seed).integers(1, 5000, size=n)
    slots = plan_slots(
        n,
        world_size=world,
        num_workers=workers,
        batch_size=batch,
        seed=seed,
        epoch=1,
        policy=policy,
        tokens=tokens,
        chunk_cells=16,
    )
    assert len(slots) == world * max(workers, 1) and len({s.n_batches for s in slots}) == 1
    _, served = _served(slots, n)
    real = served[served < n]
    assert len(np.unique(served)) == len(served)  # no position twice (pad repeats are positions >= n)
    bound = world * max(workers, 1) * batch
    if policy == "drop":
        assert len(served) == len(real) and n - len(real) < bound
    else:
        assert sorted(real.tolist()) == list(range(n)) and len(served) - n < bound


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 4000),
    before=st.sampled_from([(1, 0), (2, 1), (4, 2), (3, 0)]),
    after=st.sampled_from([(1, 0), (2, 1), (4, 0), (6, 2)]),
    global_batch=st.sampled_from([12, 24]),
    done=st.floats(0, 1),
)
def test_an_elastic_resume_serves_the_rest_of_the_epoch_once(n, before, after, global_batch, done):
    """Half an epoch on one world, the rest re-planned on another with the same global batch: no cell
    twice, equal batch counts on the new world, fewer than a round of cells left over."""
    (w0, k0), (w1, k1) = before, after
    b0, b1 = global_batch // w0, global_batch // w1
    first = plan_slots(n, world_size=w0, num_workers=k0, batch_size=b0, seed=2, epoch=3)
    batches = int(done * first[0].n_batches) * max(k0, 1)  # what each rank had consumed
    stage = Stage(w0, k0, b0, "drop", batches)
    per_worker = [(batches - w + max(k0, 1) - 1) // max(k0, 1) for w in range(max(k0, 1))]
    consumed = np.concatenate([s.to_sequence(stream_positions(s, per_worker[s.slot % max(k0, 1)] * b0)) for s in first])
    rest = remaining_sequence(n, [stage], seed=2, epoch=3, lanes=4, lane_cells=256)
    assert sorted(np.concatenate([consumed, rest]).tolist()) == list(range(n))
    second = plan_slots(len(rest), world_size=w1, num_workers=k1, batch_size=b1, seed=2, epoch=3, stage=1)
    assert len({s.n_batches for s in second}) == 1
    _, served = _served(second, len(rest))
    assert len(np.unique(served)) == len(served) and len(rest) - len(served) < w1 * max(k1, 1) * b1


@settings(max_examples=150, deadline=None)
@given(
    n=st.integers(0, 6000),
    stages=st.lists(
        st.tuples(st.sampled_from([(1, 0), (2, 1), (3, 2), (4, 0), (2, 3)]), st.integers(1, 24), st.floats(0, 1)),
        min_size=1,
        max_size=3,
    ),
    lanes=st.integers(1, 4),
    lane_cells=st.sampled_from([1, 7, 64, 256]),
    seed=st.integers(0, 1000),
)
def test_remaining_runs_equal_the_remaining_positions(n, stages, lanes, lane_cells, seed):
    """The elastic re-plan's runs (O(slots x window)) are the positions the dense reference leaves, in
    the same order, after one to three stages of any worlds, batch sizes and progress."""
    from shards.plan.elastic import Runs, _remaining_dense

    done, m = [], n
    for (world, workers), batch, frac in stages:
        slots = plan_slots(m, world_size=world, num_workers=workers, batch_size=batch, seed=seed, epoch=1)
        consumed = int(frac * slots[0].n_batches) * max(workers, 1)
        done.append(Stage(world, workers, batch, "drop", consumed))
        m = len(_remaining_dense(n, done, seed=seed, epoch=1, lanes=lanes, lane_cells=lane_cells))
    runs = remaining_sequence(n, done, seed=seed, epoch=1, lanes=lanes, lane_cells=lane_cells)
    dense = _remaining_dense(n, done, seed=seed, epoch=1, lanes=lanes, lane_cells=lane_cells)
    assert isinstance(runs, Runs) and len(runs) == len(dense)
    assert np.array_equal(np.asarray(runs), dense)
    if len(dense):
        at = np.random.default_rng(seed).integers(0, len(dense), 50)
        assert np.array_equal(runs[at], dense[at])


@settings(max_examples=120, deadline=None)
@given(
    n=st.integers(0, 2500),
    world=st.sampled_from([1, 2, 3, 4]),
    workers=st.integers(0, 3),
    batch=st.integers(1, 24),
    policy=st.sampled_from(["drop", "pad"]),
    mode=st.sampled_from(["cells", "balance", "budget"]),
    seed=st.integers(0, 2**16),
    at=st.floats(0, 1),
)
def test_a_workers_plan_starts_where_its_batches_left_off(n, world, workers, batch, policy, mode, seed, at):
    """Every worker of a world plans the same batch count; batch ends rise within its slot; a worker
    resumed after ``start`` batches starts at the window and cell where batch ``start`` begins."""
    tokens = np.random.default_rng(seed).integers(1, 3000, size=n)
    budget = 64 * batch if mode == "budget" else None
    options = SlotOptions(batch, seed, policy, 3, 16, mode == "balance", 8, budget, 64)
    kw = {"epoch": 1, "tokens": tokens}
    counts = set()
    for rank in range(world):
        for worker in range(max(workers, 1)):
            topo = Topology(rank, world, worker, workers)
            plan = plan_worker(n, topo, options, role=worker, **kw)
            ends, slot = plan.ends, plan.slot
            counts.add(plan.n_batches)
            assert (np.diff(ends) > 0).all() and (ends[-1] <= slot.n_cells if len(ends) else True)
            start = int(at * plan.n_batches)
            resumed = plan_worker(n, topo, options, role=worker, start=start, **kw)
            offset = int(ends[start - 1]) if start else 0
            assert np.array_equal(resumed.ends, ends) and resumed.index == plan.index
            if slot.n_cells and start < plan.n_batches:  # (after the last batch: nothing left to start)
                k = resumed.first_window
                assert slot.window_offsets[k] + resumed.skip == offset
                assert 0 <= resumed.skip < max(slot.window_offsets[k + 1] - slot.window_offsets[k], 1)
    assert len(counts) == 1


@settings(max_examples=200, deadline=None)
@given(total=st.integers(0, 500), workers=st.integers(0, 5))
def test_a_rank_resume_gives_each_worker_the_role_the_round_robin_left_it(total, workers):
    """Worker ``w`` plays the role that serves global batch ``total + w``; the roles' served batches add
    up to ``total``; a per-worker resume keeps the worker's own role and count."""
    k = max(workers, 1)
    starts = [start_position(Resume(3, total), 3, w, workers) for w in range(k)]
    roles = [role for _, role, _ in starts]
    assert sorted(roles) == list(range(k)) and sum(s for _, _, s in starts) == total
    for w, (_, role, served) in enumerate(starts):
        assert role == (total + w) % k and served == worker_batches(total, workers)[role]
    assert start_position(Resume(3, 7, per_rank=False), 3, k - 1, workers) == ((), k - 1, 7)
    assert start_position(Resume(2, total), 3, 0, workers) == ((), 0, 0)  # another epoch: from its start


@given(
    sizes=st.lists(st.integers(1, 40), min_size=1, max_size=12),
    cut=st.integers(0, 12),
    factors=st.tuples(st.floats(0.0, 3.5), st.floats(0.05, 3.5)),
    seed=st.integers(0, 2**16),
)
@settings(max_examples=200, deadline=None)
def test_run_plans_are_the_per_cell_plans_cell_for_cell(sizes, cut, factors, seed):
    """``run_plan`` (O(units)) serves exactly what ``sampled_plan`` over ``draw_counts`` serves: the same
    (shard, cell, copy) at every position, for one or two streams, repeats, partial runs and wraps."""
    from shards.plan.mixing import draw_counts, run_plan, run_start, sampled_plan

    shard_cells = np.asarray(sizes, dtype=np.int64)
    cut = min(cut, len(sizes) - 1) if len(sizes) > 1 else 0
    streams = [cut, len(sizes) - cut] if cut else [len(sizes)]
    starts_at = np.concatenate([[0], np.cumsum(streams)])
    counts, wanted, starts = [], [], []
    for k, _ in enumerate(streams):
        size = int(shard_cells[starts_at[k] : starts_at[k + 1]].sum())
        n = max(1, round(factors[k % 2] * size))
        counts.append(draw_counts(n, None, size, replacement=False, rng=np.random.default_rng([seed, k])))
        wanted.append(n)
        starts.append(run_start(size, np.random.default_rng([seed, k])))
    old = sampled_plan(shard_cells, np.concatenate(counts), seed=seed, epoch=1)
    new = run_plan(shard_cells, streams, wanted, starts, seed=seed, epoch=1)
    assert new.n_cells == old.n_cells and new.cells is None
    at = np.arange(old.n_cells + 5)  # and pad positions past the end
    for a, b in zip(old.locate(at), new.locate(at), strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(old.copies(at), new.copies(at))
    np.testing.assert_array_equal(
        old.gather(lambda s: np.arange(sizes[s]) * 7 + s), new.gather(lambda s: np.arange(sizes[s]) * 7 + s)
    )
