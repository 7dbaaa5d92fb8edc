"""``python -m benchmarks.atlas_calibration --out DIR``: the synthetic atlas beside real cells, measured the
same way, so that the atlas' calibration is argued from data and not tuned toward any model.

Real cells: scanpy's bundled ``pbmc68k_reduced`` (700 PBMCs of 10x's 68k data set, 765 genes, 10 labelled
types; counts recovered exactly from its ``raw``, see ``real_pbmc.pbmc_counts``), shipped inside the
scanpy wheel. Atlas: ``make demo``'s generator (``ingest synth --profile atlas`` with
``configs/ingest/demo-synth.yaml``'s world, ``--cells`` cells). Both are restricted to their 765 most
variable genes (scanpy's HVG on log1p-CP10k), so that gene counts do not differ. For each:

- ``genes_per_cell``: median genes detected per cell (of those 765);
- ``marker_strength``: per type with >= 20 cells, the mean of its 10 largest natural-log ratios of mean
  CP10k expression against all other cells (0.01 CP10k added to both), then the median over types;
- ``pca50``: scanpy's standard PCA-50 (``compare.scanpy_standard_pca``) with a logistic-regression probe,
  5-fold cross-validated over random cell folds (the real cells have one donor);
- ``readout``: the same probe on all 765 scaled genes (a supervised reading of the whole matrix);
- ``pca50 / readout``: how much of what a linear reading of the genes finds PCA-50 keeps.

The target, fixed before any recipe is run (2026-12-06): the atlas within the real cells' range on
marker strength, and its ``pca50 / readout`` no higher than the real cells' (PCA-50 keeps no more of the
type signal on the atlas than on real cells). Results: ``DIR/calibration.json`` and the report table.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

import numpy as np

from .report import Result, write_report

__all__ = ["main", "measure"]

N_GENES = 765


def measure(counts, labels: np.ndarray, seed: int = 0) -> dict[str, float]:
    """The calibration's figures of one count matrix (cells x genes, scipy sparse or dense)."""
    import scipy.sparse as sp
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.preprocessing import StandardScaler

    from training.evaluate.compare import scanpy_standard_pca

    x = sp.csr_matrix(counts, dtype=np.float32)
    lib = np.asarray(x.sum(1)).ravel()
    norm = sp.diags(1e4 / np.maximum(lib, 1)) @ x
    logs = norm.copy()
    logs.data = np.log1p(logs.data)
    mean, sq = np.asarray(logs.mean(0)).ravel(), np.asarray(logs.multiply(logs).mean(0)).ravel()
    var = sq - mean**2
    disp = np.where(mean > 0, var / np.maximum(mean, 1e-12), 0)
    keep = np.sort(np.argsort(-disp)[:N_GENES])
    x, norm, logs = x[:, keep], norm[:, keep], logs[:, keep]
    out = {"cells": float(x.shape[0]), "genes": float(x.shape[1]), "types": float(len(set(labels)))}
    out["genes_per_cell"] = float(np.median(np.diff(x.indptr)))
    dense = np.asarray(norm.todense())
    strengths = []
    for t in np.unique(labels):
        inside = labels == t
        if inside.sum() < 20:
            continue
        ratio = np.log((dense[inside].mean(0) + 0.01) / (dense[~inside].mean(0) + 0.01))
        strengths.append(float(np.sort(ratio)[-10:].mean()))
    out["marker_strength"] = float(np.median(strengths))
    out["marker_strength_min"], out["marker_strength_max"] = float(min(strengths)), float(max(strengths))
    folds = StratifiedKFold(5, shuffle=True, random_state=seed)
    probe = LogisticRegression(max_iter=2000)
    pca = scanpy_standard_pca(x.indices, x.data, x.indptr, x.shape[1], seed=seed)
    pca = StandardScaler().fit_transform(pca)
    out["pca50"] = float(cross_val_score(probe, pca, labels, cv=folds).mean())
    scaled = StandardScaler().fit_transform(np.asarray(logs.todense()))
    out["readout"] = float(cross_val_score(LogisticRegression(max_iter=2000, C=0.05), scaled, labels, cv=folds).mean())
    out["pca50_over_readout"] = out["pca50"] / out["readout"]
    return out


def _atlas(cells: int, seed: int = 7, genes: int = 8000, datasets: int = 6):
    import pandas as pd
    import scipy.sparse as sp

    from ingest.synth_atlas import ATLAS, atlas_cells, atlas_world

    world = atlas_world(seed, genes, datasets, cells, ATLAS)
    rows, obs = [], []
    for d, ds in enumerate(world["datasets"]):
        if ds["n"] == 0:
            continue
        counts, o = atlas_cells(seed, world, d, ds["n"], 0, ds["panel"], "homo_sapiens")[:2]
        full = np.zeros((ds["n"], genes), np.float32)
        full[:, ds["panel"]] = counts
        rows.append(sp.csr_matrix(full))
        obs.append(o)
    meta = pd.concat(obs, ignore_index=True)
    return sp.vstack(rows).tocsr(), meta["cell_type"].astype(str).to_numpy()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.atlas_calibration", description=__doc__.splitlines()[0])
    p.add_argument("--cells", type=int, default=3000, help="atlas cells drawn")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    import anndata as ad

    from .real_pbmc import pbmc_counts

    real = ad.read_h5ad(pbmc_counts(args.out / "pbmc.h5ad"))
    figures = {"real PBMC": measure(real.X, real.obs["cell_type"].to_numpy())}
    figures["atlas"] = measure(*_atlas(args.cells))
    results = [
        Result("calibration", name, metric, value, "", {"cells": args.cells})
        for name, f in figures.items()
        for metric, value in f.items()
    ]
    r, a = figures["real PBMC"], figures["atlas"]
    derived = [
        (
            "atlas marker strength within the real cells' range",
            a["marker_strength"],
            f"{r['marker_strength_min']:.2f}-{r['marker_strength_max']:.2f}",
        ),
        ("atlas PCA-50 / readout, over the real cells'", a["pca50_over_readout"] / r["pca50_over_readout"], "<= 1"),
    ]
    (args.out / "calibration.json").write_text(json.dumps(figures, indent=1) + "\n")
    command = "python -m benchmarks.atlas_calibration " + shlex.join(sys.argv[1:] if argv is None else argv)
    write_report(args.out, results, command, derived)
    for name, f in figures.items():
        print(f"{name}: " + ", ".join(f"{k} {v:.3f}" for k, v in f.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
