"""A seeded bijection of ``[0, n)`` computed element-wise: the global shuffle without an O(n) array.

A balanced Feistel network on ``2k`` bits with cycle-walking maps each cell's index to its position in
the shuffled shard set. Any block of cells is mapped independently of the others, so workers need no
shared permutation and memory stays bounded by the block, not the corpus (100M cells would need an
800 MB permutation array).
"""

from __future__ import annotations

import hashlib

import numpy as np

__all__ = ["FeistelPermutation"]

_ROUNDS = 6
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer: a fast, well-mixing 64-bit hash (wrapping arithmetic is intended)."""
    x = (x ^ (x >> np.uint64(30))) * _M1
    x = (x ^ (x >> np.uint64(27))) * _M2
    return x ^ (x >> np.uint64(31))


class FeistelPermutation:
    def __init__(self, n: int, seed: int, salt: str = "") -> None:
        if n < 1:
            raise ValueError("permutation domain must be non-empty")
        self.n = n
        bits = max(2, int(n - 1).bit_length())
        bits += bits % 2
        self.half = bits // 2
        self.mask = np.uint64((1 << self.half) - 1)
        digest = hashlib.sha256(f"{seed}:{salt}".encode()).digest()
        self.keys = np.frombuffer(digest[: 8 * _ROUNDS // 2], dtype="<u8").repeat(2)[:_ROUNDS].copy()
        self.keys ^= np.arange(_ROUNDS, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)

    def _once(self, x: np.ndarray) -> np.ndarray:
        left = x >> np.uint64(self.half)
        right = x & self.mask
        for k in self.keys:
            left, right = right, left ^ (_mix(right ^ k) & self.mask)
        return (left << np.uint64(self.half)) | right

    def __call__(self, idx: np.ndarray) -> np.ndarray:
        with np.errstate(over="ignore"):
            x = self._once(np.asarray(idx, dtype=np.uint64))
            out = x >= np.uint64(self.n)
            while out.any():  # cycle-walking: at most a few rounds, the domain is < 4n
                x[out] = self._once(x[out])
                out = x >= np.uint64(self.n)
        return x.astype(np.int64)
