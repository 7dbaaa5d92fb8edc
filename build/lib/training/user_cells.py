"""A user's AnnData (in memory or an h5ad path) tokenized in process with a model's vocabulary and medians.

The same rules as ``ingest build`` (``shards.tokens``): counts from ``X``, ``layers[layer]`` or
``raw.X`` must be raw integer counts (float noise below 1e-6 is rounded); gene ids come from
``var[gene_id_column]``, else ``var["feature_id"]`` when present, else ``var_names``; a cell is kept when
it has a nonzero count on a gene with a token and a median. Read in row blocks, so a backed h5ad file is
never loaded whole. Errors name the argument to change (``layer=``, ``use_raw=``, ``gene_id_column=``),
not a CLI flag or a temporary file.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from shards.errors import ShardError
from shards.format.vocab import Vocabulary, read_vocab
from shards.tokens import (
    TokenizedCells,
    TokenMap,
    clean_gene_ids,
    column_tokens,
    first_problem,
    is_integral,
    read_gene_medians,
    round_noise,
    token_medians,
    tokenize_counts,
)
from shards.tokens.counts import NEGATIVE, NONFINITE, TOO_LARGE

from .errors import ConfigError

__all__ = ["BLOCK_CELLS", "CountsSource", "tokenize_anndata"]

Spell = Callable[[str, Any], str]

#: cells tokenized at a time (a block of a backed file is read, checked and encoded at once)
BLOCK_CELLS = 8_192


@dataclass(frozen=True)
class CountsSource:
    """Where the counts and gene ids of an AnnData are (the arguments of ``embed``)."""

    layer: str | None = None
    use_raw: bool = False
    gene_id_column: str | None = None
    cli: bool = False  # messages name ``--layer`` (the CLI) instead of ``layer=`` (Python)

    def spell(self, name: str, value: Any) -> str:
        """An argument as the user writes it: ``layer='counts'`` in Python, ``--layer counts`` on the CLI."""
        if not self.cli:
            return f"{name}={value!r}"
        flag = "--" + name.replace("_", "-")
        return flag if value is True else f"{flag} {value}"

    def matrix(self, adata: Any, where: str) -> tuple[Any, str]:
        """(the counts matrix, how messages name it)."""
        if self.layer and self.use_raw:
            raise ConfigError(
                f"{where}: {self.spell('layer', self.layer)} and {self.spell('use_raw', True)} are exclusive; "
                "choose where the counts are"
            )
        if self.use_raw:
            if adata.raw is None:
                raise ConfigError(f"{where}: {self.spell('use_raw', True)} but it has no .raw")
            return adata.raw.X, "raw.X"
        if self.layer:
            if self.layer not in adata.layers:
                raise ConfigError(
                    f"{where}: {self.spell('layer', self.layer)}: not one of its layers ({list(adata.layers)})"
                )
            return adata.layers[self.layer], f"layers[{self.layer!r}]"
        return adata.X, "X"

    def var(self, adata: Any) -> pd.DataFrame:
        return adata.raw.var if self.use_raw else adata.var

    def gene_ids(self, adata: Any, where: str) -> tuple[np.ndarray, str]:
        """(the gene id of each column, the column they came from)."""
        var = self.var(adata)
        col = self.gene_id_column
        if col is not None and col not in var.columns:
            raise ConfigError(
                f"{where}: {self.spell('gene_id_column', col)}: not a column of var (columns: {list(var.columns)})"
            )
        col = col or ("feature_id" if "feature_id" in var.columns else "var_names")
        values = var.index.to_numpy() if col == "var_names" else var[col].to_numpy()
        try:
            return clean_gene_ids(values, where, col, choose=self.spell("gene_id_column", "NAME")), col
        except ShardError as exc:
            raise ConfigError(str(exc)) from None


def _best_column(var: pd.DataFrame, vocab: Vocabulary) -> tuple[str, int]:
    """The var column (or var_names) whose values match the most vocabulary genes, and how many."""
    known = set(vocab.gene_ids)
    candidates = {"var_names": var.index.astype(str)}
    for c in var.columns:
        if var[c].dtype == object or isinstance(var[c].dtype, (pd.CategoricalDtype, pd.StringDtype)):
            candidates[c] = var[c].astype(str)
    scores = {c: int(pd.Series(v).str.strip().isin(known).sum()) for c, v in candidates.items()}
    best = max(scores, key=lambda c: scores[c])
    return best, scores[best]


def _check_matches(tokens: np.ndarray, column: str, source: CountsSource, adata: Any, vocab: Vocabulary, where: str):
    """No gene of the model found, or far fewer than another column would find: an error saying which
    argument to pass."""
    found = int((tokens >= 0).sum())
    best, best_found = _best_column(source.var(adata), vocab)
    arg = "the var_names (no gene_id_column)" if best == "var_names" else source.spell("gene_id_column", best)
    if found == 0:
        hint = f"; pass {arg} ({best_found:,} of its values are)" if best_found else ""
        raise ConfigError(
            f"{where}: none of its {len(tokens):,} gene ids ({column}) is in the model's vocabulary of "
            f"{len(vocab.gene_ids):,} genes{hint}"
        )
    if best != column and best_found > 2 * found and source.gene_id_column is None:
        raise ConfigError(
            f"{where}: only {found:,} of its gene ids ({column}) are in the model's vocabulary, against "
            f"{best_found:,} of {best}'s; pass {arg}"
        )


def _check_block(
    csr: sp.csr_matrix, names: np.ndarray, ids: np.ndarray, a: int, m: str, where: str, adata: Any, spell: Spell
) -> None:
    """The block's counts are raw integer counts (else an error naming the cell, the gene and what to pass)."""
    kind, flat, noisy = first_problem(csr)
    if kind:
        row = int(np.searchsorted(csr.indptr, flat, side="right") - 1)
        at = f"cell {names[a + row]!r}, gene {ids[csr.indices[flat]]}"
        value = float(csr.data[flat])
        if kind == NONFINITE:
            raise ConfigError(f"{where}: {m} holds NaN or infinite values, first at {at}")
        if kind == NEGATIVE:
            raise ConfigError(f"{where}: {m} holds negative values ({value:g} at {at}); the model needs raw counts")
        if kind == TOO_LARGE:
            raise ConfigError(f"{where}: {m} has a count beyond the int32 range ({value:g} at {at})")
        raise ConfigError(f"{where}: {m} is not integer counts ({value:g} at {at}); {_counts_hint(adata, m, spell)}")
    if noisy:
        round_noise(csr)


def _counts_hint(adata: Any, current: str, spell: Spell) -> str:
    """Where raw counts are, when a layer or raw.X holds integers."""
    for name in list(adata.layers):
        x = adata.layers[name]
        sample = sp.csr_matrix(x[: min(256, x.shape[0])], dtype=np.float64)
        if current != f"layers[{name!r}]" and sample.nnz and is_integral(sample.data):
            return f"layers[{name!r}] holds integer counts: pass {spell('layer', name)}"
    if adata.raw is not None and current != "raw.X":
        sample = sp.csr_matrix(adata.raw.X[: min(256, adata.n_obs)], dtype=np.float64)
        if sample.nnz and is_integral(sample.data):
            return f"raw.X holds integer counts: pass {spell('use_raw', True)}"
    where = f"{spell('layer', 'NAME')} or {spell('use_raw', True)}"
    return f"it looks normalized or log-transformed: pass {where} where the raw counts are"


def tokenize_anndata(
    adata: Any, vocab_path: Path, medians_path: Path, source: CountsSource | None = None, where: str = "adata"
) -> TokenizedCells:
    """The cells of ``adata`` (an AnnData, backed or not) that have tokens, tokenized as a build would
    tokenize them with this vocabulary and these medians; their ids are the obs names."""
    source = source or CountsSource()
    try:
        vocab = read_vocab(vocab_path)
        medians = token_medians(read_gene_medians(medians_path), vocab.token_of())
    except ShardError as exc:
        raise ConfigError(f"the model's files: {exc}") from None
    matrix, m = source.matrix(adata, where)
    ids, column = source.gene_ids(adata, where)
    tokens = column_tokens(ids, vocab)
    _check_matches(tokens, column, source, adata, vocab, where)
    tmap = TokenMap(tokens, medians)
    names = np.asarray(adata.obs_names, dtype=object)
    runs, kept = [], []
    for a in range(0, adata.n_obs, BLOCK_CELLS):
        b = min(adata.n_obs, a + BLOCK_CELLS)
        block = matrix[a:b]
        csr = block.copy() if sp.issparse(block) and block.format == "csr" else sp.csr_matrix(block)
        _check_block(csr, names, ids, a, m, where, adata, source.spell)
        keep, run = tokenize_counts(csr, tmap)
        runs.append(run)
        kept.append(a + keep)
    rows = np.concatenate(kept) if kept else np.zeros(0, np.int64)
    return TokenizedCells.join(runs, names[rows], vocab)
