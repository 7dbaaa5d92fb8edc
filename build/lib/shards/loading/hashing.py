"""Counter-based hashes of (seed, epoch, cell, position): every random choice of masking and binning.

A random number here is a chain of splitmix64 finalizers over the counters, never the state of a
generator, so it depends on nothing but its counters: not on batch composition, worker count or resume.
Cell ids are hashed with siphash under a fixed key (``pandas.util.hash_array``): identical on every
machine. Pure numpy (no torch), so the plan and panel code can use it in any process.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["cell_hashes", "mask_hash", "salted", "uniform"]

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _mix(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * _M1
        x = (x ^ (x >> np.uint64(27))) * _M2
        return x ^ (x >> np.uint64(31))


def cell_hashes(cell_ids: np.ndarray) -> np.ndarray:
    """A stable 64-bit hash per cell id (siphash with a fixed key; identical on every machine)."""
    return pd.util.hash_array(np.asarray(cell_ids, dtype=object), hash_key="cellshard-mask00", categorize=False)


def salted(hashes: np.ndarray, copies: np.ndarray | None) -> np.ndarray:
    """Cell hashes with copy ``k > 0`` of a cell (a repeat in a sampled epoch) mixed with ``k``, so that
    a cell's copies get masks of their own; copy 0 keeps the cell's hash (plain epochs are unchanged)."""
    if copies is None or not np.any(copies):
        return hashes
    k = np.asarray(copies, dtype=np.uint64)
    with np.errstate(over="ignore"):
        return np.where(k > 0, _mix(hashes ^ (k * _GOLDEN)), hashes)


def mask_hash(seed: int, epoch: int, cells: np.ndarray, positions: np.ndarray, stream: int) -> np.ndarray:
    """A 64-bit hash per (cell, position), broadcasting ``cells`` against ``positions``: a chain of
    splitmix64 finalizers over the counters."""
    with np.errstate(over="ignore"):
        h = _mix(np.uint64(seed) * _GOLDEN + np.uint64(stream))
        h = _mix(h ^ (np.uint64(epoch) * _GOLDEN))
        h = _mix(h ^ np.asarray(cells, dtype=np.uint64))
        return _mix(h ^ (np.asarray(positions).astype(np.uint64) * _GOLDEN))


def _unit(h: np.ndarray) -> np.ndarray:
    """Uniform [0, 1) from 64-bit hashes (their top 53 bits)."""
    return (h >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def uniform(seed: int, epoch: int, cells: np.ndarray, positions: np.ndarray, stream: int) -> np.ndarray:
    return _unit(mask_hash(seed, epoch, cells, positions, stream))
