"""The evidence's arithmetic: a donor split, the three scores, PCA-50 of log1p-CP10k."""

from __future__ import annotations

import numpy as np
import pytest

from training.evaluate.compare import compare, donor_test_mask, log1p_cp10k_pca, score


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
    assert table["types"] == good and table["held_out_cells"] == int(test.sum())


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


def test_the_demo_gate_names_the_baseline_it_misses():
    """``report --must-beat-baselines``: passes only when the pretrained linear probe is above both
    baselines by the margin; otherwise one line naming the stronger baseline and the gap."""
    from training.evaluate.report import baseline_shortfall

    def comparison(pretrained, untrained, pca):
        return {k: {"linear": v} for k, v in (("pretrained", pretrained), ("untrained", untrained), ("pca50", pca))}

    assert baseline_shortfall(comparison(0.70, 0.30, 0.60), 0.05) is None
    short = baseline_shortfall(comparison(0.62, 0.30, 0.60), 0.05)
    assert "PCA-50" in short and "+2.0 points" in short and "5.0 required" in short
    assert "untrained encoder" in baseline_shortfall(comparison(0.50, 0.55, 0.40), 0.0)
    assert "no comparison" in baseline_shortfall(None, 0.0)
