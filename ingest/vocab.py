"""Build the vocabulary of a corpus, or adopt a given one (``--vocab``).

A built vocabulary gives the special tokens ids 0-3 (``<pad>``, ``<mask>``, ``<cls>``, ``<eos>``) and then
every gene id seen in any input, in ascending ``gene_id`` order: so several organisms (``ENSG…``,
``ENSMUSG…``) share one token space, and the same inputs always give the same ids. A given vocabulary
keeps its ids; special tokens it lacks are appended after its largest id.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from shards.errors import ShardError
from shards.format.vocab import SPECIAL_TOKENS, Vocabulary, read_vocab

from .errors import IngestError

__all__ = ["build_vocab", "clean_gene_ids", "load_vocab"]


def clean_gene_ids(values, where: str, column: str, hint: str = "") -> np.ndarray:
    """A source's gene id per column (object array), stripped; empty, ``nan`` and ``None`` as None.

    Shared by every source (h5ad ``var``, SOMA ``var``), so the same ids give the same vocabulary
    whatever they are read from. Duplicate ids would make two columns one token: refused."""
    text = pd.Series(np.asarray(values), dtype="string").str.strip()
    missing = (text.isna() | text.isin(["", "nan", "NaN", "None"])).to_numpy()
    ids = text.astype(object).to_numpy()
    ids[missing] = None
    uniq, counts = np.unique(ids[~missing].astype(str), return_counts=True)
    if (counts > 1).any():
        dup = uniq[counts > 1]
        raise IngestError(
            f"{where}: duplicate gene ids in {column}: {', '.join(dup[:5])}{' ...' if len(dup) > 5 else ''}; "
            f"choose a unique id column with --gene-id-column{hint}"
        )
    return ids


def build_vocab(gene_ids: list[np.ndarray], gene_names: list[np.ndarray]) -> Vocabulary:
    """Union of the inputs' gene ids (``None`` = missing, skipped); the first name seen is kept."""
    names: dict[str, str] = {}
    for ids, nm in zip(gene_ids, gene_names, strict=True):
        for gid, name in zip(ids.tolist(), nm.tolist(), strict=True):
            if gid is not None and gid not in names:
                names[gid] = name
    ordered = sorted(names)
    special = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    tokens = np.arange(len(SPECIAL_TOKENS), len(SPECIAL_TOKENS) + len(ordered), dtype=np.int64)
    return Vocabulary(tuple(ordered), tuple(names[g] for g in ordered), tokens, special)


def load_vocab(path: Path | str) -> Vocabulary:
    """A user's vocabulary; missing special tokens get the next free ids, in SPECIAL_TOKENS order."""
    try:
        vocab = read_vocab(path, require_special=False)
    except ShardError as exc:
        raise IngestError(f"--vocab: {exc}") from None
    special = dict(vocab.special)
    next_id = vocab.size
    for tok in SPECIAL_TOKENS:
        if tok not in special:
            special[tok] = next_id
            next_id += 1
    return Vocabulary(vocab.gene_ids, vocab.gene_names, vocab.tokens, special)
