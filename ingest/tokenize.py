"""Rank-value encoding (Geneformer's), vectorized over CSR blocks.

Each cell's tokens are its nonzero genes that have a token and a median, sorted by ``count / median``
(float64) descending, ties by ascending token id. The per-cell factor ``10_000 / n_counts`` is common to
all of a cell's genes and cannot change the order, so it is left out. Nothing is truncated here: the
context length is applied at load time.

The per-row work runs in numba over the block's CSR arrays: gather the usable entries, then an exact
LSD radix sort: stable passes over the token's bytes (the tie-break) and then over the bytes of the
key's IEEE-754 bits (positive floats order like their bits), skipping bytes that are equal across the
row. That is O(n) per cell, 2-3x faster here than numpy's or numba's comparison argsort at ~1,500 genes
per cell, and exact: equal keys keep ascending token order because every pass is stable.
"""

from __future__ import annotations

import numba
import numpy as np
import scipy.sparse as sp

__all__ = ["TokenMap", "rank_value_encode", "rows_with_tokens"]


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
def _radix_pass(values, perm, out, shift, count):  # pragma: no cover - compiled
    """One stable counting-sort pass of ``perm`` on byte ``shift`` of ``values``; False if skipped."""
    count[:] = 0
    n = perm.size
    for i in range(n):
        count[(values[perm[i]] >> shift) & 0xFF] += 1
    if count.max() == n:  # every entry has the same byte here: the pass would not move anything
        return False
    total = 0
    for b in range(256):
        c = count[b]
        count[b] = total
        total += c
    for i in range(n):
        b = (values[perm[i]] >> shift) & 0xFF
        out[count[b]] = perm[i]
        count[b] += 1
    return True


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
    width = 1
    for r in range(n_rows):
        width = max(width, offsets[r + 1] - offsets[r])
    keys = np.empty(width, dtype=np.uint64)
    toks = np.empty(width, dtype=np.uint64)
    cnts = np.empty(width, dtype=np.int32)
    perm = np.empty(width, dtype=np.int64)
    spare = np.empty(width, dtype=np.int64)
    count = np.zeros(256, dtype=np.int64)
    top = np.uint64(0x7FFFFFFFFFFFFFFF)
    for r in range(n_rows):
        n = offsets[r + 1] - offsets[r]
        if n == 0:
            continue
        j = 0
        for k in range(indptr[r], indptr[r + 1]):
            col = indices[k]
            if col_token[col] >= 0 and data[k] > 0:
                key = data[k] / col_median[col]  # > 0: its IEEE bits order like the value
                keys[j] = top - np.float64(key).view(np.uint64)  # descending
                toks[j] = col_token[col]
                cnts[j] = np.int32(data[k])
                j += 1
        p = perm[:n]
        q = spare[:n]
        for i in range(n):
            p[i] = i
        # LSD radix sort, stable: tokens first (the tie-break), then the key's 8 bytes
        for shift in range(0, 32, 8):
            if _radix_pass(toks, p, q, shift, count):
                p, q = q, p
        for shift in range(0, 64, 8):
            if _radix_pass(keys, p, q, shift, count):
                p, q = q, p
        base = offsets[r]
        for i in range(n):
            genes[base + i] = toks[p[i]]
            counts[base + i] = cnts[p[i]]
    return genes, counts, offsets


def rank_value_encode(csr: sp.csr_matrix, tmap: TokenMap) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return ``(genes int32, counts int32, offsets int64)`` for every row of ``csr`` (integer counts)."""
    return _encode(csr.indptr, csr.indices, csr.data, tmap.col_token, tmap.col_median)  # stored dtypes, no copies


@numba.njit(cache=True)
def _rows_with(indptr, indices, data, eligible):  # pragma: no cover - compiled
    out = np.zeros(len(indptr) - 1, dtype=np.bool_)
    for r in range(len(indptr) - 1):
        for k in range(indptr[r], indptr[r + 1]):
            if data[k] > 0 and eligible[indices[k]]:
                out[r] = True
                break
    return out


def rows_with_tokens(csr: sp.csr_matrix, eligible: np.ndarray) -> np.ndarray:
    """Per row: does it have a nonzero count on an eligible column (one that will become a token)?"""
    return _rows_with(csr.indptr, csr.indices, csr.data, eligible)
