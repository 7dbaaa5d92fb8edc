"""Build the vocabulary of a corpus, or adopt a given one (``--vocab``).

A built vocabulary gives the special tokens ids 0-3 (``<pad>``, ``<mask>``, ``<cls>``, ``<eos>``) and then
every gene id seen in any input, in ascending ``gene_id`` order: so several organisms (``ENSG…``,
``ENSMUSG…``) share one token space, and the same inputs always give the same ids. A given vocabulary
keeps its ids; special tokens it lacks are appended after its largest id.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from shards import tokens
from shards.errors import ShardError
from shards.format.vocab import SPECIAL_TOKENS, Vocabulary, read_vocab

from .errors import IngestError

__all__ = ["build_vocab", "clean_gene_ids", "load_vocab"]


def clean_gene_ids(values, where: str, column: str, hint: str = "") -> np.ndarray:
    """A source's gene id per column (``shards.tokens.clean_gene_ids``: the same ids give the same
    vocabulary whatever they are read from, and training tokenizes a user's AnnData the same way)."""
    try:
        return tokens.clean_gene_ids(values, where, column, hint)
    except ShardError as exc:
        raise IngestError(str(exc)) from None


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
