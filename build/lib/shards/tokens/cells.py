"""Tokenizing a matrix of cells in process, exactly as ``ingest build`` tokenizes them into shards.

A build decides per cell whether it is kept (some counts, and a nonzero count on a gene that has a
token and a median) and rank-value encodes the kept ones (``rank_value``). ``tokenize_counts`` does the
same over a CSR block, so a model's embedding of a user's AnnData needs no shard set, no subprocess and
no temporary file (a golden test compares its tokens with a build's). ``TokenizedCells`` reads like a
one-shard ``ShardSetReader`` (``shard_cells``, ``read``, ``vocab``), which is what the embedding loop takes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from ..format.records import CellRun
from ..format.vocab import Vocabulary
from .rank_value import TokenMap, rank_value_encode, rows_with_tokens

__all__ = ["TokenizedCells", "kept_rows", "tokenize_counts"]


def kept_rows(csr: sp.csr_matrix, tmap: TokenMap) -> np.ndarray:
    """The rows a build keeps: some counts, and a nonzero count on a column that becomes a token."""
    n_counts = np.asarray(csr.sum(axis=1)).ravel()
    return np.flatnonzero((n_counts > 0) & rows_with_tokens(csr, tmap.col_token >= 0))


def tokenize_counts(csr: sp.csr_matrix, tmap: TokenMap) -> tuple[np.ndarray, CellRun]:
    """(the kept rows, their tokens as a ``CellRun`` whose ids are the row numbers)."""
    keep = kept_rows(csr, tmap)
    genes, counts, offsets = rank_value_encode(csr if len(keep) == csr.shape[0] else csr[keep], tmap)
    return keep, CellRun(genes, counts, offsets.astype(np.int64, copy=False), keep.astype(object))


@dataclass
class TokenizedCells:
    """Tokenized cells in memory, read like one shard of a set (``ShardSetReader``'s read interface)."""

    genes: np.ndarray
    counts: np.ndarray
    offsets: np.ndarray
    ids: np.ndarray  # the cells' names (object)
    vocabulary: Vocabulary

    @classmethod
    def join(cls, runs: list[CellRun], names: np.ndarray, vocabulary: Vocabulary) -> TokenizedCells:
        lengths = np.concatenate([np.diff(r.offsets) for r in runs]) if runs else np.zeros(0, np.int64)
        offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        cat = (lambda k: np.concatenate([getattr(r, k) for r in runs])) if runs else (lambda k: np.zeros(0, np.int32))
        return cls(cat("genes"), cat("counts"), offsets, np.asarray(names, dtype=object), vocabulary)

    @property
    def shard_cells(self) -> np.ndarray:
        return np.array([len(self.ids)], dtype=np.int64) if len(self.ids) else np.zeros(0, np.int64)

    def vocab(self) -> Vocabulary:
        return self.vocabulary

    def read(self, i: int, start: int, stop: int) -> CellRun:
        lo, hi = int(self.offsets[start]), int(self.offsets[stop])
        return CellRun(self.genes[lo:hi], self.counts[lo:hi], self.offsets[start : stop + 1] - lo, self.ids[start:stop])
