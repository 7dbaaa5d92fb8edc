"""The README's "my own h5ad" quickstart, run as it stands (its bash block, extracted from README.md),
on a scanpy-style file: build → fit → embeddings back into a copy of the user's AnnData."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from tests.conftest import ROOT


def readme_block(name: str) -> str:
    text = (ROOT / "README.md").read_text()
    m = re.search(rf"<!-- quickstart: {name} -->\n```bash\n(.*?)```", text, re.S)
    assert m, f"README.md has no quickstart block {name!r}"
    return m.group(1)


def _scanpy_style(synth: Path, out: Path) -> ad.AnnData:
    """A synthetic corpus file made to look like a scanpy user's: counts moved to a layer, X normalised,
    symbols as var_names, Ensembl ids in a column, the donor column renamed, obs_names of their own."""
    a = ad.read_h5ad(synth)
    counts = sp.csr_matrix(a.X)
    lib = np.asarray(counts.sum(1)).ravel()
    norm = sp.diags(1e4 / np.maximum(lib, 1)) @ counts
    norm.data = np.log1p(norm.data)
    var = pd.DataFrame({"gene_ids": a.var_names.to_numpy()}, index=[f"SYM{i}" for i in range(a.n_vars)])
    obs = pd.DataFrame(
        {
            "sample": [f"{d}-{i % 6}" for i, d in enumerate(a.obs["donor_id"].astype(str))],  # ~50 samples
            "cell_type": a.obs["cell_type"].astype(str).to_numpy(),
        },
        index=[f"AAAC-{i}" for i in range(a.n_obs)],
    )
    user = ad.AnnData(X=norm.astype(np.float32), obs=obs, var=var, layers={"counts": counts})
    user.write_h5ad(out)
    return user


@pytest.mark.slow
def test_readme_quickstart_own_h5ad(tmp_path):
    synth = tmp_path / "s.h5ad"
    cmd = [sys.executable, "-m", "ingest", "synth", "--cells", "3000", "--genes", "800", "--datasets", "2"]
    subprocess.run([*cmd, "--seed", "3", "--out", str(synth), "--quiet"], check=True, cwd=ROOT)
    user = _scanpy_style(next(tmp_path.glob("s*.h5ad")), tmp_path / "mine.h5ad")
    (tmp_path / "configs").symlink_to(ROOT / "configs")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", readme_block("own-h5ad")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    out = ad.read_h5ad(tmp_path / "mine-embedded.h5ad")
    # their AnnData: same cells in the same order, their obs and var, their layers, plus the embedding
    assert list(out.obs_names) == list(user.obs_names)
    pd.testing.assert_frame_equal(out.obs, user.obs)
    pd.testing.assert_frame_equal(out.var, user.var)
    assert (out.layers["counts"] != user.layers["counts"]).nnz == 0
    emb = out.obsm["X_cellshard"]
    assert emb.shape == (user.n_obs, 64) and np.isfinite(emb).all()
    # each row is its own cell's: the same cells in another order (and a subset) get the same vectors by name
    user[::-3].copy().write_h5ad(tmp_path / "reordered.h5ad")
    again = tmp_path / "reordered-embedded.h5ad"
    embed = [sys.executable, "-m", "training", "embed", "--ckpt", "my-run/checkpoints/last.ckpt"]
    embed += ["--h5ad", "reordered.h5ad", "--layer", "counts", "--gene-id-column", "gene_ids", "--out", str(again)]
    subprocess.run(embed, cwd=tmp_path, env=env, check=True, capture_output=True, timeout=300)
    other = ad.read_h5ad(again)
    assert list(other.obs_names) == list(user.obs_names[::-3])
    np.testing.assert_allclose(other.obsm["X_cellshard"], out[other.obs_names].obsm["X_cellshard"], atol=1e-5)
