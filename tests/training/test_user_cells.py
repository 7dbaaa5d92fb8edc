"""A user's AnnData tokenized in process (``training.user_cells``, on ``shards.tokens``) gives exactly the
tokens ``ingest build`` stores for the same file, and its errors name Python arguments."""

from __future__ import annotations

import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from ingest import BuildOptions, SynthSpec, build, synthesize
from shards import ShardSetReader
from training.errors import ConfigError
from training.user_cells import CountsSource, tokenize_anndata


@pytest.fixture(scope="module")
def user_file(tmp_path_factory):
    """A scanpy-style file (log-normalised X, counts in a layer with float noise, symbols as var_names,
    Ensembl ids in a categorical column), with a cell of no counts and one whose only genes are unknown."""
    tmp = tmp_path_factory.mktemp("user")
    synth = next(p for p, _ in synthesize(SynthSpec(cells=900, genes=300, datasets=2, files=1, seed=8), tmp / "s.h5ad"))
    a = ad.read_h5ad(synth)
    dense = np.asarray(sp.csr_matrix(a.X).todense(), dtype=np.float32)
    dense[0] = 0  # no counts at all
    dense[1] = 0
    last = dense.shape[1] - 1
    dense[1, last] = 5  # only on a gene without an id (below)
    counts = sp.csr_matrix(dense)
    noisy = counts.copy()
    noisy.data = noisy.data + np.float32(3e-7)  # float noise below the tolerance: rounded by both paths
    ids = a.var_names.to_numpy().astype(object)
    ids[last] = ""  # a gene without an id: dropped by both
    var = pd.DataFrame({"gene_ids": pd.Categorical(ids)}, index=[f"SYM{i}" for i in range(a.n_vars)])
    lib = np.asarray(counts.sum(1)).ravel()
    norm = sp.diags(1e4 / np.maximum(lib, 1)) @ counts
    norm.data = np.log1p(norm.data)
    obs = pd.DataFrame(
        {"cell_type": a.obs["cell_type"].astype(str).to_numpy()}, index=[f"C{i}" for i in range(a.n_obs)]
    )
    user = ad.AnnData(X=norm.astype(np.float32), obs=obs, var=var, layers={"counts": noisy})
    path = tmp / "mine.h5ad"
    user.write_h5ad(path)
    out = tmp / "set"
    build(
        BuildOptions(
            input=[str(path)], out=str(out), layer="counts", gene_id_column="gene_ids", val_fraction=0, quiet=True
        )
    )
    return path, out


def _stored(out) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    reader = ShardSetReader(out)
    cells = {}
    for i, n in enumerate(reader.shard_cells.tolist()):
        run = reader.read(i, 0, n)
        for j, cid in enumerate(run.ids):
            lo, hi = run.offsets[j], run.offsets[j + 1]
            cells[str(cid).split(":", 1)[1]] = (run.genes[lo:hi], run.counts[lo:hi])
    return cells


@pytest.mark.parametrize("backed", [False, True], ids=["in-memory", "backed"])
def test_in_process_tokens_equal_the_build(user_file, backed, monkeypatch):
    path, out = user_file
    monkeypatch.setattr("training.user_cells.BLOCK_CELLS", 128)  # several blocks, as a large file reads
    adata = ad.read_h5ad(path, backed="r" if backed else None)
    cells = tokenize_anndata(
        adata, out / "vocab.csv", out / "gene_medians.csv", CountsSource("counts", False, "gene_ids")
    )
    stored = _stored(out)
    assert sorted(map(str, cells.ids)) == sorted(stored) and len(stored) == adata.n_obs - 2  # C0, C1 dropped
    run = cells.read(0, 0, len(cells.ids))
    for j, name in enumerate(run.ids):
        lo, hi = run.offsets[j], run.offsets[j + 1]
        genes, counts = stored[str(name)]
        np.testing.assert_array_equal(run.genes[lo:hi], genes)
        np.testing.assert_array_equal(run.counts[lo:hi], counts)


def test_python_errors_name_the_argument(user_file):
    path, out = user_file
    adata = ad.read_h5ad(path)
    files = (out / "vocab.csv", out / "gene_medians.csv")
    with pytest.raises(
        ConfigError, match=r"X is not integer counts .* layers\['counts'\] holds integer counts: pass layer='counts'"
    ):
        tokenize_anndata(adata, *files, CountsSource(gene_id_column="gene_ids"))
    with pytest.raises(ConfigError, match=r"none of its \d+ gene ids \(var_names\) .* pass gene_id_column='gene_ids'"):
        tokenize_anndata(adata, *files, CountsSource(layer="counts"))
    with pytest.raises(ConfigError, match=r"layer='raw': not one of its layers \(\['counts'\]\)"):
        tokenize_anndata(adata, *files, CountsSource(layer="raw"))
    with pytest.raises(ConfigError, match=r"gene_id_column='ids': not a column of var"):
        tokenize_anndata(adata, *files, CountsSource(layer="counts", gene_id_column="ids"))
    with pytest.raises(ConfigError, match=r"--layer counts and --use-raw are exclusive"):
        tokenize_anndata(adata, *files, CountsSource(layer="counts", use_raw=True, cli=True))
    with pytest.raises(ConfigError, match=r"use_raw=True but it has no .raw"):
        tokenize_anndata(adata, *files, CountsSource(use_raw=True))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing written, nothing run in a subprocess: no temporary file named
        cells = tokenize_anndata(adata, *files, CountsSource(layer="counts", gene_id_column="gene_ids"))
    assert len(cells.ids) == adata.n_obs - 2
