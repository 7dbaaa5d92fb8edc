"""Property-based tests (hypothesis) of the rank-value tokenizer over random blocks: the oracle, order
invariants, ties, empty cells."""

from __future__ import annotations

import itertools

import numpy as np
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from shards.tokens import TokenMap, rank_value_encode
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
