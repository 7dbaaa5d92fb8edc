"""Does the embedding know cell types better than the inputs do? The evidence every report gives.

Three embeddings of the *same* cells are scored the same way: the trained encoder's, an untrained
encoder's of the same shape (what the architecture and tokenization give for free), and PCA-50 of
log1p-CP10k counts (the classic baseline any cell embedding must beat). Cells are split **by donor**:
the probes are fitted on the cells of some donors and scored on the cells of the others, so a probe
cannot win by recognising a donor's batch effect. For each embedding:

- ``linear``: accuracy of a logistic regression (standardised inputs);
- ``knn``: accuracy of a 15-nearest-neighbour vote (Euclidean, standardised inputs);
- ``mixing``: for each held-out cell, the entropy of the donors among its 15 nearest neighbours *of the
  same label*, over log(its label's donor count), averaged: 1 when a type's cells sit together whatever
  their donor, 0 when each donor's cells form their own cluster ("learned cell types, not donors").
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

__all__ = ["K", "compare", "donor_test_mask", "log1p_cp10k_pca", "score"]

K = 15


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


def score(x: np.ndarray, labels: np.ndarray, donors: np.ndarray, test: np.ndarray, seed: int = 0) -> dict[str, float]:
    """``linear``, ``knn`` and ``mixing`` of one embedding (see the module's docstring)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier

    train = ~test
    if train.sum() < K or test.sum() < 1 or len(np.unique(labels[train])) < 2:
        raise ValueError("too few cells or labels on one side of the donor split")
    z = _standardize(np.asarray(x, dtype=np.float64), train)
    clf = LogisticRegression(max_iter=1000, random_state=seed).fit(z[train], labels[train])
    knn = KNeighborsClassifier(n_neighbors=K).fit(z[train], labels[train])
    return {
        "linear": float((clf.predict(z[test]) == labels[test]).mean()),
        "knn": float((knn.predict(z[test]) == labels[test]).mean()),
        "mixing": _mixing(z, labels, donors, test),
    }


def log1p_cp10k_pca(
    genes: np.ndarray, counts: np.ndarray, offsets: np.ndarray, n_genes: int, n_components: int = 50, seed: int = 0
) -> np.ndarray:
    """PCA-``n_components`` of log1p(counts per 10k) of ragged cells (gene ids < ``n_genes``), as scanpy's
    ``normalize_total`` + ``log1p`` + ``pca`` (centred, no scaling) would give."""
    import scipy.sparse as sp
    from sklearn.decomposition import PCA

    n = len(offsets) - 1
    totals = np.add.reduceat(counts.astype(np.float64), offsets[:-1]) if len(counts) else np.zeros(n)
    totals[np.diff(offsets) == 0] = 1.0
    per_cell = np.repeat(1e4 / totals, np.diff(offsets))
    x = sp.csr_matrix((np.log1p(counts * per_cell), genes, offsets), shape=(n, n_genes))
    k = min(n_components, n - 1, n_genes - 1)
    return PCA(n_components=k, svd_solver="arpack", random_state=seed).fit_transform(x.toarray().astype(np.float32))


def compare(embeddings: dict[str, np.ndarray], labels: np.ndarray, donors: np.ndarray, seed: int = 0) -> dict[str, Any]:
    """Each named embedding's scores on one donor split: ``{"cells", "donors", "held_out_donors", name: scores}``."""
    labels = np.asarray(labels).astype(str)
    donors = np.asarray(donors).astype(str)
    test = donor_test_mask(donors, seed)
    out: dict[str, Any] = {
        "cells": len(labels),
        "donors": len(np.unique(donors)),
        "held_out_donors": len(np.unique(donors[test])),
        "held_out_cells": int(test.sum()),
    }
    for name, x in embeddings.items():
        out[name] = score(x, labels, donors, test, seed)
    return out
