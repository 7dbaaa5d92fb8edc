"""Train/val assignment by a seeded hash of the ``--split-by`` key.

A donor (or dataset, or cell) goes wholly to one split, decided by its key and the seed only: the
assignment does not depend on file order, blocks or workers, and a rebuild with more data keeps every
existing donor where it was.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd

__all__ = ["SPLIT_NAMES", "assign_split"]

SPLIT_NAMES = ("train", "val")


def _hash_key(seed: int) -> str:
    return hashlib.blake2b(str(seed).encode(), digest_size=8).hexdigest()  # 16 chars, as pandas needs


def assign_split(keys: np.ndarray, seed: int, val_fraction: float) -> np.ndarray:
    """0 (train) or 1 (val) per key: val when the key's 64-bit siphash / 2**64 < ``val_fraction``."""
    if val_fraction <= 0:
        return np.zeros(len(keys), dtype=np.uint8)
    uniq, inverse = np.unique(np.asarray(keys, dtype=object).astype(str), return_inverse=True)
    h = pd.util.hash_array(uniq.astype(object), hash_key=_hash_key(seed), categorize=False)
    u = (h >> np.uint64(11)).astype(np.float64) / float(1 << 53)
    return (u < val_fraction).astype(np.uint8)[inverse]
