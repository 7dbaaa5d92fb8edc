"""Rank-value encoding (Geneformer's), vectorized over CSR blocks.

Each cell's tokens are its nonzero genes that have a token and a median, sorted by ``count / median``
(float64) descending, ties by ascending token id. The per-cell factor ``10_000 / n_counts`` is common to
all of a cell's genes and cannot change the order, so it is left out. Nothing is truncated here: the
context length is applied at load time.

Columns are first permuted into token order (one scipy gather for the whole block), so that a stable
sort on the key alone breaks ties by token id; the per-row sort runs in numba.
"""

from __future__ import annotations

import numba
import numpy as np
import scipy.sparse as sp

__all__ = ["TokenMap", "rank_value_encode"]


class TokenMap:
    """Column → (token, median) lookup for one input file, precomputed once per file."""

    def __init__(self, col_token: np.ndarray, token_median: dict[int, float]) -> None:
        col_token = np.asarray(col_token, dtype=np.int64)
        med = np.array([token_median.get(int(t), np.nan) if t >= 0 else np.nan for t in col_token])
        usable = (col_token >= 0) & ~np.isnan(med)
        cols = np.flatnonzero(usable)
        order = np.argsort(col_token[cols], kind="stable")
        #: the usable columns in ascending token order
        self.columns = cols[order]
        self.tokens = col_token[self.columns].astype(np.int32)
        self.medians = med[self.columns].astype(np.float64)


@numba.njit(cache=True)
def _sort_rows(indptr, data, medians, out_order):  # pragma: no cover - compiled
    for r in range(len(indptr) - 1):
        a, b = indptr[r], indptr[r + 1]
        if b - a < 2:
            for k in range(a, b):
                out_order[k] = k
            continue
        key = np.empty(b - a)
        for k in range(a, b):
            key[k - a] = -(data[k] / medians[k])
        local = np.argsort(key, kind="mergesort")
        for k in range(b - a):
            out_order[a + k] = a + local[k]


def rank_value_encode(csr: sp.csr_matrix, tmap: TokenMap) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return ``(genes int32, counts int32, offsets int64)`` for every row of ``csr`` (integer counts)."""
    sub = csr[:, tmap.columns]
    sub.eliminate_zeros()
    sub.sort_indices()
    medians = tmap.medians[sub.indices]
    order = np.empty(sub.nnz, dtype=np.int64)
    _sort_rows(sub.indptr.astype(np.int64), sub.data.astype(np.float64), medians, order)
    genes = tmap.tokens[sub.indices[order]]
    counts = sub.data[order].astype(np.int32)
    return genes, counts, sub.indptr.astype(np.int64)
