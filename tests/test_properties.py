"""Property-based tests (hypothesis) over random shapes: the rank-value tokenizer (the oracle, order
invariants, ties, empty cells) and the sampler (exactly once and equal batch counts with token
balancing and after an elastic change of world size)."""

from __future__ import annotations

import itertools

import numpy as np
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from ingest.tokenize import TokenMap, rank_value_encode
from shards.sampler import plan_slots, remaining_sequence, stream_positions
from tests.conftest import reference_tokens


@st.composite
def blocks(draw):
    """A CSR block of integer counts (many ties, empty rows), a column -> token map with holes (-1) and
    medians with holes (a token without a median is not tokenized)."""
    n = draw(st.integers(0, 12))
    g = draw(st.integers(1, 25))
    dense = draw(arrays(np.int64, (n, g), elements=st.sampled_from([0, 0, 0, 1, 1, 2, 3, 7, 1000])))
    tokens = draw(st.permutations(range(4, 4 + g)))
    col_token = np.array([t if draw(st.booleans()) or i == 0 else -1 for i, t in enumerate(tokens)], np.int64)
    medians = {int(t): draw(st.sampled_from([0.5, 1.0, 1.0, 2.0, 3.0, 1e-3])) for t in col_token if t >= 0}
    for t in [t for t in medians if draw(st.integers(0, 9)) == 0]:
        del medians[t]
    return sp.csr_matrix(dense.astype(np.float32)), col_token, medians


def _encode(csr, col_token, medians):
    genes, counts, offsets = rank_value_encode(csr, TokenMap(col_token, medians))
    return [(genes[a:b].tolist(), counts[a:b].tolist()) for a, b in itertools.pairwise(offsets)]


@settings(max_examples=150, deadline=None)
@given(blocks())
def test_tokenizer_equals_the_oracle_with_ties_and_empty_cells(block):
    csr, col_token, medians = block
    med = np.array([medians.get(int(t), np.nan) if t >= 0 else np.nan for t in col_token])
    rows = _encode(csr, col_token, medians)
    assert len(rows) == csr.shape[0]
    for r, (genes, counts) in enumerate(rows):
        dense = csr[r].toarray().ravel()
        assert genes == reference_tokens(dense, col_token, med).tolist()
        by_token = {int(t): int(c) for t, c in zip(col_token, dense, strict=True)}
        assert counts == [by_token[t] for t in genes]  # aligned raw counts
        assert len(set(genes)) == len(genes)
        usable = [int(t) for t, c, m in zip(col_token, dense, med, strict=True) if c > 0 and not np.isnan(m)]
        assert sorted(genes) == sorted(usable)  # every usable gene, nothing else (an empty cell: nothing)
        keys = [by_token[t] / medians[t] for t in genes]
        for i in range(len(genes) - 1):  # descending by count/median, ties by ascending token
            assert keys[i] > keys[i + 1] or (keys[i] == keys[i + 1] and genes[i] < genes[i + 1])


@settings(max_examples=80, deadline=None)
@given(blocks(), st.randoms(use_true_random=False), st.integers(1, 9))
def test_tokens_do_not_depend_on_column_order_or_depth(block, rnd, factor):
    """The same cells with the genes stored in another column order, or sequenced `factor` times deeper
    (a multiple of every count: the per-cell normalization cannot change the order), give the same tokens."""
    csr, col_token, medians = block
    order = list(range(csr.shape[1]))
    rnd.shuffle(order)
    shuffled = _encode(csr[:, order].tocsr(), col_token[order], medians)
    assert [g for g, _ in shuffled] == [g for g, _ in _encode(csr, col_token, medians)]
    deeper = _encode((csr * factor).tocsr(), col_token, medians)
    assert [g for g, _ in deeper] == [g for g, _ in shuffled]


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
    slots = plan_slots(n, world_size=world, num_workers=workers, batch_size=batch, seed=seed, epoch=1,
                       policy=policy, tokens=tokens, chunk_cells=16)  # fmt: skip
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
    stage = {"world_size": w0, "num_workers": k0, "batch_size": b0, "policy": "drop", "batches": batches}
    per_worker = [(batches - w + max(k0, 1) - 1) // max(k0, 1) for w in range(max(k0, 1))]
    consumed = np.concatenate([s.to_sequence(stream_positions(s, per_worker[s.slot % max(k0, 1)] * b0))
                               for s in first])  # fmt: skip
    rest = remaining_sequence(n, [stage], seed=2, epoch=3, lanes=4, lane_cells=256)
    assert sorted(np.concatenate([consumed, rest]).tolist()) == list(range(n))
    second = plan_slots(len(rest), world_size=w1, num_workers=k1, batch_size=b1, seed=2, epoch=3, stage=1)
    assert len({s.n_batches for s in second}) == 1
    _, served = _served(second, len(rest))
    assert len(np.unique(served)) == len(served) and len(rest) - len(served) < w1 * max(k1, 1) * b1
