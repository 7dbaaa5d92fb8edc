"""Rank-value encoding (Geneformer's), vectorized over CSR blocks.

Each cell's tokens are its nonzero genes that have a token and a median, sorted by ``count / median``
(float64) descending, ties by ascending token id. The per-cell factor ``10_000 / n_counts`` is common to
all of a cell's genes and cannot change the order, so it is left out. Nothing is truncated here: the
context length is applied at load time.

The per-row work runs in numba over the block's CSR arrays: gather usable entries, sort by key
(quicksort), then re-sort only the runs of equal keys by token, which keeps the order exact without a
second full sort (ties are common: medians are histogram bin centres, counts small integers).
"""

from __future__ import annotations

import numba
import numpy as np
import scipy.sparse as sp

__all__ = ["TokenMap", "rank_value_encode"]


class TokenMap:
    """Column → (token, median) lookup for one input file; -1 / NaN where a column is not tokenized."""

    def __init__(self, col_token: np.ndarray, token_median: dict[int, float]) -> None:
        col_token = np.asarray(col_token, dtype=np.int64)
        tokens = np.fromiter(token_median.keys(), dtype=np.int64, count=len(token_median))
        values = np.fromiter(token_median.values(), dtype=np.float64, count=len(token_median))
        lookup = np.full(max(int(col_token.max(initial=-1)), int(tokens.max(initial=-1))) + 2, np.nan)
        lookup[tokens] = values
        med = np.where(col_token >= 0, lookup[col_token], np.nan)
        usable = (col_token >= 0) & ~np.isnan(med)
        self.col_token = np.where(usable, col_token, -1).astype(np.int32)
        self.col_median = np.where(usable, med, np.nan)


@numba.njit(cache=True)
def _encode(indptr, indices, data, col_token, col_median):  # pragma: no cover - compiled
    n_rows = len(indptr) - 1
    offsets = np.zeros(n_rows + 1, dtype=np.int64)
    for r in range(n_rows):
        c = 0
        for k in range(indptr[r], indptr[r + 1]):
            if col_token[indices[k]] >= 0 and data[k] > 0:
                c += 1
        offsets[r + 1] = offsets[r] + c
    genes = np.empty(offsets[-1], dtype=np.int32)
    counts = np.empty(offsets[-1], dtype=np.int32)
    for r in range(n_rows):
        n = offsets[r + 1] - offsets[r]
        if n == 0:
            continue
        keys = np.empty(n)
        toks = np.empty(n, dtype=np.int32)
        cnts = np.empty(n, dtype=np.int32)
        j = 0
        for k in range(indptr[r], indptr[r + 1]):
            col = indices[k]
            if col_token[col] >= 0 and data[k] > 0:
                keys[j] = -(data[k] / col_median[col])
                toks[j] = col_token[col]
                cnts[j] = np.int32(data[k])
                j += 1
        order = np.argsort(keys)
        i = 0
        while i < n:  # equal keys: order by token id
            e = i + 1
            while e < n and keys[order[e]] == keys[order[i]]:
                e += 1
            if e - i > 1:
                run = order[i:e].copy()
                order[i:e] = run[np.argsort(toks[run], kind="mergesort")]
            i = e
        base = offsets[r]
        for q in range(n):
            genes[base + q] = toks[order[q]]
            counts[base + q] = cnts[order[q]]
    return genes, counts, offsets


def rank_value_encode(csr: sp.csr_matrix, tmap: TokenMap) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return ``(genes int32, counts int32, offsets int64)`` for every row of ``csr`` (integer counts)."""
    return _encode(
        csr.indptr.astype(np.int64),
        csr.indices.astype(np.int64),
        csr.data.astype(np.float64, copy=False),
        tmap.col_token,
        tmap.col_median,
    )
