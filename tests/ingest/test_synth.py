"""The synthetic corpus looks like the Census where it matters to a loader and a model."""

from __future__ import annotations

import anndata as ad
import numpy as np
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
