"""The evidence's arithmetic: donor splits, the three scores and their intervals, the standard PCA-50 of
scanpy's default pipeline and PCA-50 of all genes, the gate."""

from __future__ import annotations

import numpy as np
import pytest

from training.evaluate.compare import compare, donor_test_mask, log1p_cp10k_pca, scanpy_standard_pca, score


def _cells(n=600, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(3, size=n).astype(str)
    donors = rng.integers(6, size=n).astype(str)
    return rng, labels, donors


def test_the_split_is_by_donor_stable_and_two_sided():
    _, _, donors = _cells()
    test = donor_test_mask(donors, seed=1)
    assert np.array_equal(test, donor_test_mask(donors, seed=1))
    assert set(donors[test]).isdisjoint(donors[~test]) and test.any() and (~test).any()
    with pytest.raises(ValueError, match="2"):
        donor_test_mask(np.array(["a", "a"]))


def test_scores_tell_types_from_donors():
    rng, labels, donors = _cells()
    test = donor_test_mask(donors)
    by_type = np.eye(3)[labels.astype(int)] * 3 + rng.normal(0, 0.5, (len(labels), 3))
    by_donor = np.eye(6)[donors.astype(int)] * 3 + rng.normal(0, 0.5, (len(labels), 6))
    good, bad = score(by_type, labels, donors, test), score(by_donor, labels, donors, test)
    assert good["linear"] > 0.95 and good["knn"] > 0.95 and good["mixing"] > 0.8
    assert bad["linear"] < 0.6 and bad["mixing"] < 0.2  # each donor its own cluster
    table = compare({"types": by_type, "donors": by_donor}, labels, donors)
    assert {k: table["types"][k] for k in good} == good and table["held_out_cells"] == int(test.sum())
    # several splits: means of the splits' scores, their spread, and the paired difference's error
    many = compare({"types": by_type, "donors": by_donor}, labels, donors, split_seeds=(0, 1, 2))
    per = [score(by_type, labels, donors, donor_test_mask(donors, s), s)["linear"] for s in (0, 1, 2)]
    assert many["types"]["linear"] == pytest.approx(np.mean(per)) and len(many["splits"]) == 3
    assert many["types"]["linear_sd"] == pytest.approx(np.std(per, ddof=1))
    assert 0 < many["types"]["linear_ci"] < 0.05 and 0.02 < many["donors"]["linear_ci"] < 0.1
    d = many["donors"]["diff"]
    assert d["linear"] == pytest.approx(many["types"]["linear"] - many["donors"]["linear"]) and 0 < d["se"] < 0.05
    assert "diff" not in many["types"]


def test_pca_is_of_log1p_counts_per_10k():
    from sklearn.decomposition import PCA

    rng = np.random.default_rng(2)
    dense = rng.poisson(rng.gamma(0.5, 2.0, (80, 40))).astype(np.float64)
    dense[0] = 0  # a cell without counts stays at the origin of its normalisation
    rows = [np.flatnonzero(r) for r in dense]
    offsets = np.concatenate([[0], np.cumsum([len(r) for r in rows])])
    genes = np.concatenate(rows)
    counts = np.concatenate([dense[i, r] for i, r in enumerate(rows)])
    got = log1p_cp10k_pca(genes, counts, offsets, 40, n_components=5)
    lib = dense.sum(1, keepdims=True)
    want = PCA(5, svd_solver="arpack", random_state=0).fit_transform(np.log1p(dense * 1e4 / np.maximum(lib, 1)))
    np.testing.assert_allclose(np.abs(got), np.abs(want), rtol=1e-3, atol=1e-3)  # up to each component's sign


def test_the_standard_pca_is_scanpys_default_pipeline():
    """The ``pca50`` row is what a scanpy user runs: normalize_total(1e4), log1p, HVG-2000, scale(10), PCA."""
    import anndata as ad
    import scanpy as sc
    import scipy.sparse as sp

    rng = np.random.default_rng(3)
    dense = rng.poisson(rng.gamma(0.3, 3.0, (300, 2600))).astype(np.float32)
    dense[:, -5:] = 0  # genes no cell expresses
    x = sp.csr_matrix(dense)
    got = scanpy_standard_pca(x.indices, x.data, x.indptr, x.shape[1], n_components=20)
    a = ad.AnnData(x[:, :-5].copy())
    sc.pp.normalize_total(a, target_sum=1e4)
    sc.pp.log1p(a)
    sc.pp.highly_variable_genes(a, n_top_genes=2000)
    a = a[:, a.var["highly_variable"].to_numpy()].copy()
    a.X = a.X.toarray()
    sc.pp.scale(a, max_value=10)
    sc.pp.pca(a, n_comps=20, random_state=0)
    np.testing.assert_allclose(np.abs(got), np.abs(a.obsm["X_pca"]), rtol=1e-3, atol=1e-3)
    assert got.shape == (300, 20)


def _diff(linear, se):
    return {"linear": linear, "se": se}


def test_the_gate_needs_a_win_beyond_sampling_error_and_seed_spread():
    """``report --must-beat``: a baseline is beaten only when the paired held-out difference exceeds
    1.96 x its standard error plus the seed spread; otherwise one line naming it, the gap and the margin."""
    from training.evaluate.report import baseline_shortfall, gate

    c = {
        "pretrained": {"linear": 0.70},
        "pca50": {"linear": 0.66, "diff": _diff(0.04, 0.01)},
        "untrained": {"linear": 0.30, "diff": _diff(0.40, 0.01)},
    }
    s = {"comparison": c, "val_loss": 5.0, "frequency_baseline_loss": 5.2}
    assert gate(s, ["untrained", "frequency"], 0.01) == []
    assert gate(s, ["pca50"], 0.01) == []  # 4.0 > 1.96 x 1.0 + 1.0
    (short,) = gate(s, ["pca50"], 0.03)  # 4.0 < 1.96 + 3.0
    assert short.startswith("pca50:") and "+4.0 points" in short and "margin 5.0" in short
    (loss,) = gate({**s, "val_loss": 5.18}, ["frequency"])
    assert "frequency" in loss and "5.180" in loss
    assert "not computed" in gate(s, ["scvi"])[0] and "no comparison" in gate({}, ["pca50"])[0]
    with pytest.raises(Exception, match="choose among"):
        gate(s, ["pca"])
    assert "untrained encoder" in baseline_shortfall({**c, "untrained": {"linear": 0.7, "diff": _diff(0, 0.01)}}, 0)
