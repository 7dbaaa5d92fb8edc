"""Does the embedding know cell types better than the inputs do? The evidence every report gives.

Embeddings of the *same* cells are scored the same way: the trained encoder's; the field's standard
baseline, **PCA-50 of scanpy's default pipeline** (``normalize_total(1e4)`` → ``log1p`` →
``highly_variable_genes(n_top_genes=2000)`` → ``scale(max_value=10)`` → ``pca(50)``, the row named
``pca50``); PCA-50 of log1p-CP10k on all genes, unscaled (``pca50_all``: a weaker variant, kept for
comparison with earlier reports); an untrained encoder of the same shape (what the architecture and the
tokenization give for free); and scVI's latent space when scvi-tools is installed (``scvi``).

Cells are split **by group** (``donor_id`` by default): the probes are fitted on the cells of some
donors and scored on the cells of the others, so a probe cannot win by recognising a donor's batch
effect. One split is one draw; the scores are averaged over several splits (``SPLIT_SEEDS``) and
reported with their spread across splits and their sampling error. For each embedding:

- ``linear``: accuracy of a logistic regression (standardised inputs);
- ``knn``: accuracy of a 15-nearest-neighbour vote (Euclidean, standardised inputs);
- ``mixing``: for each held-out cell, the entropy of the donors among its 15 nearest neighbours *of the
  same label*, over log(its label's donor count), averaged: 1 when a type's cells sit together whatever
  their donor, 0 when each donor's cells form their own cluster ("learned cell types, not donors").

Against the first embedding (the pretrained one) each other embedding also gets the paired difference of
linear-probe accuracy on the same held-out cells, with its standard error (``diff``): what a gate needs.

Long because every baseline of the comparison (scanpy's standard PCA-50, all-genes PCA-50, untrained, scVI)
and the statistics that score them on the same splits belong together."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd

from .defaults import SPLIT_SEEDS

__all__ = [
    "EMBEDDING_NAMES",
    "SPLIT_SEEDS",
    "K",
    "compare",
    "comparison_rows",
    "donor_test_mask",
    "log1p_cp10k_pca",
    "ragged_counts",
    "scanpy_standard_pca",
    "score",
    "scvi_latent",
]

K = 15
#: epochs of scVI's training in a report (see ``scvi_latent``)
SCVI_EPOCHS = 50
#: how reports name each embedding
EMBEDDING_NAMES = {
    "pretrained": "pretrained",
    "pca50": "PCA-50 scanpy standard",
    "pca50_all": "PCA-50 all genes",
    "untrained": "untrained encoder",
    "scvi": f"scVI latent ({SCVI_EPOCHS} ep.)",
}
#: two-sided 95% normal quantile
Z95 = 1.959964


def donor_test_mask(donors: np.ndarray, seed: int = 0) -> np.ndarray:
    """Held-out cells: those of about half the donors, chosen by a stable hash of (seed, donor)."""
    names = pd.unique(pd.Series(np.asarray(donors, dtype=object).astype(str)))
    if len(names) < 2:
        raise ValueError(f"{len(names)} donor(s): a split by donor needs at least 2")
    h = pd.util.hash_array(np.asarray([f"{seed}:{d}" for d in names], dtype=object), categorize=False)
    order = names[np.argsort(h, kind="stable")]
    held = set(order[: max(1, len(order) // 2)].tolist())
    return np.asarray([str(d) in held for d in donors])


def _standardize(x: np.ndarray, train: np.ndarray) -> np.ndarray:
    mu, sd = x[train].mean(0), x[train].std(0)
    return (x - mu) / np.where(sd > 0, sd, 1.0)


def _mixing(z: np.ndarray, labels: np.ndarray, donors: np.ndarray, test: np.ndarray) -> float:
    from sklearn.neighbors import NearestNeighbors

    scores = []
    for label in np.unique(labels[test]):
        same = labels == label
        n_donors = len(np.unique(donors[same]))
        if n_donors < 2 or same.sum() <= K:
            continue
        nn = NearestNeighbors(n_neighbors=K + 1).fit(z[same])
        query = np.flatnonzero(test[same])
        _, idx = nn.kneighbors(z[same][query])
        neighbour_donors = donors[same][idx[:, 1:]]
        for row in neighbour_donors:
            _, counts = np.unique(row, return_counts=True)
            p = counts / counts.sum()
            scores.append(float(-(p * np.log(p)).sum() / np.log(min(n_donors, K))))
    return float(np.mean(scores)) if scores else float("nan")


def _fit_predict(
    x: np.ndarray, labels: np.ndarray, test: np.ndarray, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The standardised embedding and each held-out cell's linear and kNN predictions being right."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier

    train = ~test
    if train.sum() < K or test.sum() < 1 or len(np.unique(labels[train])) < 2:
        raise ValueError("too few cells or labels on one side of the donor split")
    z = _standardize(np.asarray(x, dtype=np.float64), train)
    clf = LogisticRegression(max_iter=1000, random_state=seed).fit(z[train], labels[train])
    knn = KNeighborsClassifier(n_neighbors=K).fit(z[train], labels[train])
    return z, clf.predict(z[test]) == labels[test], knn.predict(z[test]) == labels[test]


def score(x: np.ndarray, labels: np.ndarray, donors: np.ndarray, test: np.ndarray, seed: int = 0) -> dict[str, float]:
    """``linear``, ``knn`` and ``mixing`` of one embedding on one split (see the module's docstring)."""
    z, linear, knn = _fit_predict(x, labels, test, seed)
    return {"linear": float(linear.mean()), "knn": float(knn.mean()), "mixing": _mixing(z, labels, donors, test)}


def ragged_counts(genes: np.ndarray, counts: np.ndarray, offsets: np.ndarray, n_genes: int):
    """Ragged cells (gene ids < ``n_genes``) as a CSR matrix of float32 counts, on copies of the arrays:
    scipy sorts a row's indices in place, which would reorder the caller's rank-ordered genes."""
    import scipy.sparse as sp

    n = len(offsets) - 1
    data = np.array(counts, dtype=np.float32, copy=True)
    return sp.csr_matrix((data, np.array(genes, copy=True), np.array(offsets, copy=True)), shape=(n, n_genes))


def log1p_cp10k_pca(
    genes: np.ndarray, counts: np.ndarray, offsets: np.ndarray, n_genes: int, n_components: int = 50, seed: int = 0
) -> np.ndarray:
    """PCA-``n_components`` of log1p(counts per 10k) of ragged cells on *all* genes, centred, not scaled:
    the ``pca50_all`` row (weaker than the standard pipeline of ``scanpy_standard_pca``)."""
    import scipy.sparse as sp
    from sklearn.decomposition import PCA

    n = len(offsets) - 1
    totals = np.add.reduceat(counts.astype(np.float64), offsets[:-1]) if len(counts) else np.zeros(n)
    totals[np.diff(offsets) == 0] = 1.0
    per_cell = np.repeat(1e4 / totals, np.diff(offsets))
    x = sp.csr_matrix((np.log1p(counts * per_cell), np.array(genes, copy=True), offsets), shape=(n, n_genes))
    k = min(n_components, n - 1, n_genes - 1)
    return PCA(n_components=k, svd_solver="arpack", random_state=seed).fit_transform(x.toarray().astype(np.float32))


def scanpy_standard_pca(
    genes: np.ndarray,
    counts: np.ndarray,
    offsets: np.ndarray,
    n_genes: int,
    *,
    n_components: int = 50,
    n_top_genes: int = 2000,
    seed: int = 0,
) -> np.ndarray:
    """PCA-``n_components`` of scanpy's default preprocessing, run by scanpy itself: ``normalize_total``
    to 10,000 counts per cell, ``log1p``, ``highly_variable_genes(n_top_genes)`` (the default ``seurat``
    flavour, on the log data), ``scale(max_value=10)`` of those genes, ``pca`` (the baseline the field
    runs before any cell embedding: the ``pca50`` row)."""
    import anndata as ad
    import scanpy as sc

    adata = ad.AnnData(ragged_counts(genes, counts, offsets, n_genes))
    expressed = np.asarray((adata.X > 0).sum(0)).ravel() > 0
    adata = adata[:, expressed].copy()  # genes no cell here expresses carry no variance (and break binning)
    sc.pp.normalize_total(adata, target_sum=1e4)
    sc.pp.log1p(adata)
    top = min(n_top_genes, adata.n_vars)
    if top < adata.n_vars:
        sc.pp.highly_variable_genes(adata, n_top_genes=top)
        adata = adata[:, adata.var["highly_variable"].to_numpy()].copy()
    adata.X = adata.X.toarray()  # scaling centres every gene: dense either way (scanpy warns when it densifies)
    sc.pp.scale(adata, max_value=10)
    k = min(n_components, adata.n_obs - 1, adata.n_vars - 1)
    sc.pp.pca(adata, n_comps=k, random_state=seed)
    return np.asarray(adata.obsm["X_pca"], dtype=np.float32)


def scvi_latent(
    genes: np.ndarray,
    counts: np.ndarray,
    offsets: np.ndarray,
    n_genes: int,
    *,
    batch: np.ndarray | None = None,
    max_epochs: int = SCVI_EPOCHS,
    n_top_genes: int = 2000,
    seed: int = 0,
) -> np.ndarray | None:
    """scVI's latent space (scvi-tools' model defaults: 10 dimensions; 2,000 highly variable genes by the
    ``seurat_v3`` flavour on counts; ``max_epochs`` epochs, fewer than scvi-tools' own default of up to
    400 so that a report stays within minutes on a CPU: a lower bound of what scVI reaches), or None
    when scvi-tools is not installed (``pip install 'cellshard[eval]'``). ``batch``: a batch key per
    cell (e.g. the dataset), as scVI is used; the donor is *not* given, so the held-out donors stay
    unseen by any label. Its training logs are kept off the report's output."""
    try:
        import scvi
    except ImportError:
        return None
    import anndata as ad
    import scanpy as sc

    adata = ad.AnnData(ragged_counts(genes, counts, offsets, n_genes))
    expressed = np.asarray((adata.X > 0).sum(0)).ravel() >= 3
    adata = adata[:, expressed].copy()
    if n_top_genes < adata.n_vars:
        sc.pp.highly_variable_genes(adata, n_top_genes=n_top_genes, flavor="seurat_v3")
        adata = adata[:, adata.var["highly_variable"].to_numpy()].copy()
    key = None
    if batch is not None and len(np.unique(batch)) > 1:
        adata.obs["batch"] = pd.Categorical(np.asarray(batch).astype(str))
        key = "batch"
    with _quiet_training():
        scvi.settings.seed = seed
        scvi.model.SCVI.setup_anndata(adata, batch_key=key)
        model = scvi.model.SCVI(adata)
        model.train(
            max_epochs=max_epochs,
            accelerator="cpu",
            enable_progress_bar=False,
            enable_model_summary=False,
            logger=False,
        )
        return np.asarray(model.get_latent_representation(), dtype=np.float32)


@contextlib.contextmanager
def _quiet_training() -> Iterator[None]:
    """scvi-tools trains with Lightning, which prints its set-up lines and tips: off for the duration."""
    import logging
    import warnings

    names = ("lightning", "lightning.pytorch", "lightning.fabric", "scvi", "lightning_fabric", "pytorch_lightning")
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    try:
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def comparison_rows(c: dict[str, Any]) -> list[str]:
    """The baseline rows a comparison holds, in report order (without ``pretrained``)."""
    return [k for k in EMBEDDING_NAMES if k != "pretrained" and k in c]


def _interval(p: float, n: int) -> float:
    """Half-width of the 95% Wilson interval of an accuracy ``p`` measured on ``n`` cells (not zero at
    0 or 100%, unlike the normal approximation)."""
    n = max(n, 1)
    z2 = Z95 * Z95
    return float(Z95 / (1 + z2 / n) * np.sqrt(max(p * (1 - p), 0.0) / n + z2 / (4 * n * n)))


def compare(
    embeddings: dict[str, np.ndarray],
    labels: np.ndarray,
    donors: np.ndarray,
    seed: int = 0,
    *,
    split_seeds: tuple[int, ...] | None = None,
    group_by: str = "donor_id",
) -> dict[str, Any]:
    """Each named embedding's scores averaged over donor splits (``split_seeds``, default ``(seed,)``).

    Returns ``{"cells", "donors", "group_by", "splits": [{seed, held_out_donors, held_out_cells}],
    "held_out_donors", "held_out_cells"`` (of the first split) and, per embedding, ``{linear, knn,
    mixing}`` (means over splits) with ``linear_sd``/``knn_sd`` (spread across splits),
    ``linear_ci``/``knn_ci`` (half-width of the 95% Wilson interval of each split's accuracy, mean over
    splits),
    ``per_split`` (each split's scores) and, for every embedding after the first, ``diff``: the mean
    paired difference of linear accuracy *first minus this one* over the same held-out cells and its
    standard error (cell-level, root-mean-square over splits)."""
    labels = np.asarray(labels).astype(str)
    donors = np.asarray(donors).astype(str)
    seeds = tuple(split_seeds) if split_seeds else (seed,)
    names = list(embeddings)
    out: dict[str, Any] = {"cells": len(labels), "donors": len(np.unique(donors)), "group_by": group_by, "splits": []}
    per: dict[str, dict[str, list[float]]] = {n: {"linear": [], "knn": [], "mixing": [], "cells": []} for n in names}
    diffs: dict[str, dict[str, list[float]]] = {n: {"mean": [], "var": []} for n in names[1:]}
    for s in seeds:
        test = donor_test_mask(donors, s)
        out["splits"].append(
            {"seed": s, "held_out_donors": len(np.unique(donors[test])), "held_out_cells": int(test.sum())}
        )
        right: dict[str, np.ndarray] = {}
        for name in names:
            z, linear, knn = _fit_predict(embeddings[name], labels, test, s)
            right[name] = linear
            p = per[name]
            p["linear"].append(float(linear.mean()))
            p["knn"].append(float(knn.mean()))
            p["mixing"].append(_mixing(z, labels, donors, test))
            p["cells"].append(int(test.sum()))
        for name in names[1:]:
            d = right[names[0]].astype(np.float64) - right[name].astype(np.float64)
            diffs[name]["mean"].append(float(d.mean()))
            diffs[name]["var"].append(float(d.var(ddof=1) / len(d)) if len(d) > 1 else 0.0)
    out["held_out_donors"] = out["splits"][0]["held_out_donors"]
    out["held_out_cells"] = out["splits"][0]["held_out_cells"]
    for name in names:
        p = per[name]
        row: dict[str, Any] = {
            "linear": float(np.mean(p["linear"])),
            "knn": float(np.mean(p["knn"])),
            "mixing": float(np.nanmean(p["mixing"])) if not np.all(np.isnan(p["mixing"])) else float("nan"),
        }
        for key in ("linear", "knn"):
            row[f"{key}_sd"] = float(np.std(p[key], ddof=1)) if len(seeds) > 1 else 0.0
            row[f"{key}_ci"] = float(np.mean([_interval(a, n) for a, n in zip(p[key], p["cells"], strict=True)]))
        row["per_split"] = {k: p[k] for k in ("linear", "knn", "mixing")}
        if name in diffs:
            row["diff"] = {
                "linear": float(np.mean(diffs[name]["mean"])),
                "se": float(np.sqrt(np.mean(diffs[name]["var"]))),
                "per_split": diffs[name]["mean"],
            }
        out[name] = row
    return out
