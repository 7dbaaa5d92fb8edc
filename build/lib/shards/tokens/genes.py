"""Gene ids as a source gives them, cleaned the one way every source and the in-process tokenizer share,
and mapped onto a vocabulary's tokens."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..errors import ShardError
from ..format.vocab import Vocabulary

__all__ = ["clean_gene_ids", "column_tokens"]


def clean_gene_ids(values, where: str, column: str, hint: str = "", choose: str = "--gene-id-column") -> np.ndarray:
    """A source's gene id per column (object array), stripped; empty, ``nan`` and ``None`` as None.

    Duplicate ids would make two columns one token: refused, naming ``where``, the ``column`` and how to
    choose another (``choose``: the CLI's flag or a Python argument)."""
    text = pd.Series(np.asarray(values), dtype="string").str.strip()
    missing = (text.isna() | text.isin(["", "nan", "NaN", "None"])).to_numpy()
    ids = text.astype(object).to_numpy()
    ids[missing] = None
    uniq, counts = np.unique(ids[~missing].astype(str), return_counts=True)
    if (counts > 1).any():
        dup = uniq[counts > 1]
        raise ShardError(
            f"{where}: duplicate gene ids in {column}: {', '.join(dup[:5])}{' ...' if len(dup) > 5 else ''}; "
            f"choose a unique id column with {choose}{hint}"
        )
    return ids


def column_tokens(ids: np.ndarray, vocab: Vocabulary) -> np.ndarray:
    """Each column's token (-1: no id, or not in the vocabulary)."""
    token_of = vocab.token_of()
    return np.array([token_of.get(g, -1) if g is not None else -1 for g in ids.tolist()], dtype=np.int64)
