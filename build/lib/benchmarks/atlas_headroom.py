"""How much cell type the synthetic atlas holds beyond PCA-50: the calibration check for the learning demo.

A pretrained embedding can only beat PCA-50 of log1p-CP10k on held-out donors if the counts carry cell
type that PCA-50 loses. This draws cells of ``ingest synth --profile atlas`` in process (any
``AtlasParams`` override), and scores, with ``training.evaluate.compare`` (split by donor, the same
probe as every report): PCA-k for several k, and a supervised logistic regression on every gene's
standardised log1p-CP10k (fitted on the training donors: what a linear readout of *all* the data gets),
and the same readout of each cell's latent module activities (``latent``: the generator's own state,
before counting noise, ambient RNA and batch effects; an upper bound no embedding of counts reaches).
The target is room: PCA-50 below 0.9 of the latent ceiling (what a perfect reading of the cells'
state would give). When PCA-50 is at or above the supervised readout of the counts as well, the atlas is
PCA's own model and no embedding can beat PCA-50 by a clear margin on it, whatever the recipe (the
calibration before 2026-12-05 was such an atlas).

``python -m benchmarks.atlas_headroom --out DIR [--cells 3000 --genes 8000 --label cell_type
--set latent_sd=0.25 ...]``
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import shlex
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from .report import Result, write_report

__all__ = ["headroom", "main"]

PCA_K = (10, 20, 50, 100)


def _params(overrides: list[str]):
    from ingest.synth_atlas import ATLAS

    kw = {}
    for item in overrides:
        key, _, text = item.partition("=")
        if not hasattr(ATLAS, key) or not text:
            raise SystemExit(f"--set {item!r}: use NAME=VALUE with an AtlasParams field")
        current = getattr(ATLAS, key)
        value = ast.literal_eval(text)
        kw[key] = tuple(value) if isinstance(current, tuple) else type(current)(value)
    return dataclasses.replace(ATLAS, **kw)


def headroom(params, cells: int, genes: int, label: str, datasets: int = 6, seed: int = 7) -> dict[str, float]:
    """Held-out-donor linear accuracy of PCA-k (``pca{k}``), kNN of PCA-50, and the supervised readout
    (``all_genes``) on ``cells`` cells of an atlas drawn as ``ingest synth`` would (same world)."""
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression

    from ingest.synth_atlas import atlas_cells, atlas_world
    from training.evaluate.compare import donor_test_mask, score

    world = atlas_world(seed, genes, datasets, cells, params)
    rows, obs, latent = [], [], []
    for d, ds in enumerate(world["datasets"]):
        if ds["n"] == 0:
            continue
        counts, o, a = atlas_cells(seed, world, d, ds["n"], 0, ds["panel"], "homo_sapiens", with_activity=True)
        latent.append(a)
        full = np.zeros((ds["n"], genes), np.float32)
        full[:, ds["panel"]] = counts
        rows.append(full)
        obs.append(o)
    x = np.concatenate(rows)
    meta = pd.concat(obs, ignore_index=True)
    labels, donors = meta[label].astype(str).to_numpy(), meta["donor_id"].astype(str).to_numpy()
    test = donor_test_mask(donors)
    logs = np.log1p(x * (1e4 / np.maximum(x.sum(1, keepdims=True), 1)))
    logs = logs[:, logs[~test].std(0) > 0]
    out = {"genes_per_cell": float(np.median((x > 0).sum(1))), "classes": float(len(set(labels)))}
    for k in PCA_K:
        s = score(PCA(k, random_state=0).fit_transform(logs), labels, donors, test)
        out[f"pca{k}"] = s["linear"]
        if k == 50:
            out["pca50_knn"] = s["knn"]
    for name, feats, c in (("all_genes", logs, 0.05), ("latent", np.concatenate(latent), 1.0)):
        z = (feats - feats[~test].mean(0)) / feats[~test].std(0)
        clf = LogisticRegression(max_iter=2000, C=c).fit(z[~test], labels[~test])
        out[name] = float((clf.predict(z[test]) == labels[test]).mean())
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.atlas_headroom", description=__doc__.splitlines()[0])
    p.add_argument("--cells", type=int, default=3000)
    p.add_argument("--genes", type=int, default=8000)
    p.add_argument("--label", action="append", help="obs column(s) to probe (default: cell_type, cell_state)")
    p.add_argument("--set", action="append", default=[], help="an AtlasParams override NAME=VALUE (repeatable)")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    params = _params(args.set)
    results, derived = [], []
    for label in args.label or ["cell_type", "cell_state"]:
        h = headroom(params, args.cells, args.genes, label)
        cfg = {"label": label, "cells": args.cells, "genes": args.genes, "overrides": args.set}
        for metric, value in h.items():
            results.append(Result("headroom", f"atlas {label}", metric, value, "share", cfg))
        # room for an embedding to beat PCA-50: PCA-50 well below what the latent state allows
        derived.append((f"{label}: PCA-50 / latent ceiling", h["pca50"] / h["latent"], "< 0.9"))
        derived.append((f"{label}: PCA-50 / supervised readout of all genes", h["pca50"] / h["all_genes"], ""))
        print(f"{label}: " + ", ".join(f"{k} {v:.3f}" for k, v in h.items()), flush=True)
    command = "python -m benchmarks.atlas_headroom " + shlex.join(sys.argv[1:] if argv is None else argv)
    write_report(args.out, results, command, derived)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
