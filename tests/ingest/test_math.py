"""Pure functions: medians, tokenization, permutation, split."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.medians import (
    histogram_block,
    medians_from_histograms,
    medians_to_csv,
    read_medians,
)
from ingest.permute import FeistelPermutation
from ingest.split import assign_split
from shards.tokens import TokenMap, rank_value_encode
from tests.conftest import reference_tokens


def _random_counts(rng, n, g, density=0.2):
    m = sp.random(n, g, density=density, format="csr", random_state=rng, dtype=np.float64)
    m.data = np.ceil(m.data * rng.choice([1, 3, 50, 900], size=m.nnz))
    return m


def test_medians_within_one_percent_of_exact_and_independent_of_split():
    rng = np.random.default_rng(0)
    X = _random_counts(rng, 3000, 40)
    n_counts = np.asarray(X.sum(axis=1)).ravel()
    col_row = np.arange(40)
    whole = histogram_block(X, col_row, n_counts, 40).tocsr()
    halves = histogram_block(X[:1234], col_row, n_counts[:1234], 40) + histogram_block(
        X[1234:], col_row, n_counts[1234:], 40
    )
    assert (whole != halves.tocsr()).nnz == 0  # integer histograms merge exactly
    approx = medians_from_histograms(whole)
    norm = sp.csr_matrix(sp.diags(1e4 / n_counts) @ X)
    for j in range(40):
        col = norm[:, j].toarray().ravel()
        exact = np.median(col[col > 0])
        assert abs(approx[j] - exact) / exact <= 0.01, (j, approx[j], exact)


def test_median_of_two_far_values_is_their_mean_not_one_of_them():
    X = sp.csr_matrix(np.array([[1.0, 9999.0], [100.0, 9900.0]]))
    n_counts = np.full(2, 10_000.0)
    hist = histogram_block(X[:, :1], np.array([0]), n_counts, 1)
    assert medians_from_histograms(hist.tocsr())[0] == pytest.approx(50.5, rel=0.01)


def test_genes_never_seen_have_no_median_and_csv_round_trips_exactly(tmp_path):
    med = np.array([np.nan, 0.1 + 0.2, 1 / 3, 12345.678901234567])
    path = tmp_path / "m.csv"
    path.write_bytes(medians_to_csv(["a", "b", "c", "d"], med))
    back = read_medians(path)
    assert list(back) == ["b", "c", "d"]
    assert [back[k] for k in "bcd"] == med[1:].tolist()  # bit-exact


def test_tokenize_matches_reference_including_ties():
    rng = np.random.default_rng(1)
    X = _random_counts(rng, 200, 60, density=0.3)
    X.data = np.minimum(X.data, 4)  # many ties
    col_token = rng.permutation(60) + 4
    col_token[[5, 17]] = -1  # not in vocabulary
    medians = {int(t): float(m) for t, m in zip(col_token, rng.choice([1.0, 2.0, 0.5], 60), strict=True) if t >= 0}
    medians.pop(int(col_token[3]))  # in vocabulary without a median
    genes, counts, offsets = rank_value_encode(X, TokenMap(col_token, medians))
    med_per_col = np.array([medians.get(int(t), np.nan) if t >= 0 else np.nan for t in col_token])
    for r in range(X.shape[0]):
        dense = X[r].toarray().ravel()
        expect = reference_tokens(dense, col_token, med_per_col)
        got = genes[offsets[r] : offsets[r + 1]]
        np.testing.assert_array_equal(got, expect)
        token_to_count = dict(zip(col_token.tolist(), dense.tolist(), strict=True))
        assert counts[offsets[r] : offsets[r + 1]].tolist() == [token_to_count[t] for t in got.tolist()]


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 5000), st.integers(0, 2**32))
def test_feistel_is_a_bijection(n, seed):
    perm = FeistelPermutation(n, seed)(np.arange(n))
    assert np.array_equal(np.sort(perm), np.arange(n))


def test_feistel_depends_on_seed_and_salt():
    a = FeistelPermutation(1000, 1)(np.arange(1000))
    assert not np.array_equal(a, FeistelPermutation(1000, 2)(np.arange(1000)))
    assert not np.array_equal(a, FeistelPermutation(1000, 1, "val")(np.arange(1000)))
    assert np.array_equal(a, FeistelPermutation(1000, 1)(np.arange(1000)))


def test_split_keeps_each_key_whole_and_hits_the_fraction():
    keys = np.array([f"donor{i % 500}" for i in range(20_000)], dtype=object)
    s = assign_split(keys, seed=5, val_fraction=0.2)
    for k in np.unique(keys)[:50]:
        assert len(set(s[keys == k])) == 1
    per_key = {k: v for k, v in zip(keys, s, strict=True)}
    assert 0.15 < np.mean(list(per_key.values())) < 0.25
    assert not np.array_equal(s, assign_split(keys, seed=6, val_fraction=0.2))
    assert assign_split(keys, seed=5, val_fraction=0.0).sum() == 0


def test_gene_ids_are_cleaned_the_same_way_for_every_source():
    from ingest.errors import IngestError
    from ingest.vocab import clean_gene_ids

    got = clean_gene_ids(np.array([" ENSG1 ", "", None, "nan", "None", "ENSG2"], dtype=object), "f.h5ad", "var.index")
    assert got.tolist() == ["ENSG1", None, None, None, None, "ENSG2"]
    with pytest.raises(IngestError, match=r"exp: duplicate gene ids in var.feature_id: ENSG1; .*feature_id"):
        clean_gene_ids(np.array(["ENSG1", "ENSG1 "], dtype=object), "exp", "var.feature_id", " (Census: feature_id)")
