"""The synthetic corpus looks like the Census where it matters to a loader and a model."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from ingest import SynthSpec, synthesize
from ingest.errors import IngestError

OBS = {
    "dataset_id",
    "assay",
    "cell_type",
    "tissue",
    "tissue_general",
    "donor_id",
    "organism",
    "is_primary_data",
    "suspension_type",
}


@pytest.mark.slow
def test_default_corpus_shape_and_determinism(tmp_path):
    ((a, n),) = synthesize(SynthSpec(cells=2000, seed=5), tmp_path / "a.h5ad")
    ((b, _),) = synthesize(SynthSpec(cells=2000, seed=5), tmp_path / "b.h5ad")
    x, y = ad.read_h5ad(a), ad.read_h5ad(b)
    assert n == 2000 and OBS <= set(x.obs.columns)
    assert (x.X != y.X).nnz == 0  # same seed, same cells
    genes = np.diff(x.X.indptr)
    assert 1500 <= np.median(genes) <= 2000 and np.percentile(genes, 1) >= 300 and genes.max() <= 6000
    assert x.var.index.str.match(r"^ENSG\d{11}$").all() and "feature_name" in x.var
    assert np.all(x.X.data == np.round(x.X.data))
    donors = x.obs.groupby("donor_id", observed=True)["dataset_id"].nunique()
    assert (donors == 1).all()  # donors nested in datasets
    # cell types carry distinct programmes: mean profiles of two types differ clearly
    types = x.obs["cell_type"].astype(str).to_numpy()
    t1, t2 = np.unique(types)[:2]
    m1 = np.asarray(x.X[types == t1].mean(0)).ravel()
    m2 = np.asarray(x.X[types == t2].mean(0)).ravel()
    assert np.corrcoef(np.log1p(m1), np.log1p(m2))[0, 1] < 0.98


def test_mouse_files_and_cellxgene_layout(tmp_path):
    written = synthesize(
        SynthSpec(cells=300, genes=400, datasets=2, files=2, organism="mus_musculus", layout="cellxgene", seed=1),
        tmp_path / "m.h5ad",
    )
    assert [p.name for p, _ in written] == ["m-000.h5ad", "m-001.h5ad"]
    x = ad.read_h5ad(written[0][0])
    assert x.var.index[0].startswith("ENSMUSG") and x.raw is not None
    assert not np.all(x.X.data == np.round(x.X.data)) and np.all(x.raw.X.data == np.round(x.raw.X.data))


def test_bad_synth_options():
    with pytest.raises(IngestError, match="--organism"):
        synthesize(SynthSpec(cells=10, organism="danio_rerio"), "x.h5ad")


def test_atlas_profile_is_hierarchical_batchy_and_deterministic(tmp_path):
    """``--profile atlas``: each type in one lineage, states within types, donors nested in datasets,
    Census-like detection, and dataset effects strong enough to move PCA (the calibration's premise)."""
    from training.evaluate.compare import log1p_cp10k_pca

    spec = SynthSpec(cells=3000, genes=2000, datasets=3, seed=5, profile="atlas")
    ((path, n),) = synthesize(spec, tmp_path / "a.h5ad")
    a = ad.read_h5ad(path)
    assert n == a.n_obs == 3000
    assert a.obs.groupby("cell_type", observed=True)["lineage"].nunique().max() == 1
    assert all(s.startswith(t) for s, t in zip(a.obs["cell_state"], a.obs["cell_type"], strict=True))
    assert a.obs.groupby("donor_id", observed=True)["dataset_id"].nunique().max() == 1
    assert a.obs["donor_id"].nunique() >= 3 * 8
    genes = np.diff(a.X.tocsr().indptr)
    assert 200 < np.median(genes) < 2000
    # the first principal component of log1p-CP10k separates datasets more than it does lineages
    x = a.X.tocsr()
    pc1 = log1p_cp10k_pca(x.indices, x.data, x.indptr, x.shape[1], n_components=2)[:, 0]

    def spread(column: str) -> float:
        means = pd.Series(pc1).groupby(a.obs[column].to_numpy()).mean()
        return float(means.std())

    assert spread("dataset_id") > spread("lineage")
    ((again, _),) = synthesize(spec, tmp_path / "b.h5ad")
    b = ad.read_h5ad(again)
    assert (a.X != b.X).nnz == 0 and a.obs.reset_index(drop=True).equals(b.obs.reset_index(drop=True))
