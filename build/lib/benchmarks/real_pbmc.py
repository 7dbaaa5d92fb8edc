"""``python -m benchmarks.real_pbmc --out DIR``: the report's comparison on real cells, end to end.

The cells are scanpy's bundled ``pbmc68k_reduced`` (700 real PBMCs from 10x's 68k-PBMC data set, 765
genes, ``bulk_labels`` as the cell type; shipped inside the scanpy wheel, so no download). Its ``raw`` holds
log1p of counts per 10k; each cell's counts are recovered exactly as ``expm1(x) / min(expm1(x))`` (the
smallest non-zero value of a cell is one count; the recovered values are integers to 1e-3, checked).
The file is then used as a user would: ``ingest build`` (symbols as ids, split by a ``fold`` column of 40
random cell groups, since the cells have no donor), ``training fit --config tiny`` for ``--steps`` steps,
``training report --group-by fold`` over 5 splits: pretrained vs scanpy's standard PCA-50 vs all-genes
PCA-50 vs an untrained encoder (vs scVI when installed), linear probe and kNN with their intervals.
Writes ``DIR/summary.json`` (the report's) and ``DIR/report.txt``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np

__all__ = ["main", "pbmc_counts"]

ROOT = Path(__file__).resolve().parents[1]


def pbmc_counts(out: Path) -> Path:
    """``pbmc68k_reduced`` as a counts h5ad with ``cell_type`` and a ``fold`` column; returns its path."""
    import anndata as ad
    import pandas as pd
    import scanpy as sc
    import scipy.sparse as sp

    a = sc.datasets.pbmc68k_reduced()
    x = sp.csr_matrix(a.raw.X, dtype=np.float64)
    x.data = np.expm1(x.data)
    unit = np.minimum.reduceat(x.data, x.indptr[:-1])  # one count per cell
    x.data /= np.repeat(unit, np.diff(x.indptr))
    counts = np.rint(x.data)
    if np.abs(x.data - counts).max() > 0.25:
        raise RuntimeError("pbmc68k_reduced: raw values are not log1p of scaled integer counts")
    x.data = counts.astype(np.float32)
    rng = np.random.default_rng(0)
    obs = pd.DataFrame(
        {"cell_type": a.obs["bulk_labels"].astype(str).to_numpy(), "fold": rng.integers(40, size=a.n_obs).astype(str)},
        index=a.obs_names,
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    ad.AnnData(X=x, obs=obs, var=pd.DataFrame(index=a.raw.var_names)).write_h5ad(out)
    return out


def _run(*args: str) -> str:
    proc = subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args[:2])} failed:\n{proc.stderr[-3000:]}")
    return proc.stdout


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.real_pbmc", description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--steps", type=int, default=300, help="pretraining steps of the tiny config")
    a = p.parse_args(argv)
    h5ad = pbmc_counts(a.out / "pbmc.h5ad")
    shards, run = a.out / "shards", a.out / "run"
    build = ["ingest", "build", "--input", str(h5ad), "--out", str(shards), "--allow-non-ensembl-ids"]
    _run(*build, "--split-by", "fold", "--val-fraction", "0.3", "--cells-per-shard", "500", "--quiet")
    fit = ["training", "fit", "--config", "tiny", "--data.path", str(shards), "--trainer.default_root_dir", str(run)]
    fit[3] = str(ROOT / "configs" / "train" / "tiny.yaml")
    _run(*fit, "--trainer.max_steps", str(a.steps), "--trainer.enable_progress_bar", "false")
    text = _run("training", "report", "--run", str(run), "--group-by", "fold")
    (a.out / "report.txt").write_text(text)
    (a.out / "summary.json").write_text((run / "summary.json").read_text())
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
