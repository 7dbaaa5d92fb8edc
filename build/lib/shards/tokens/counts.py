"""Checks that a block of counts holds raw integer counts, shared by every source and by in-process
tokenization (``shards.tokens.cells``).

One compiled pass over a CSR block's values finds the first non-finite, negative, fractional or
over-large value; the source turns its position into a cell and a gene for the message. Float noise
below 1e-6 (counts stored as float32 after arithmetic) is rounded away rather than refused.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from shards.jit import kernel

__all__ = ["FRACTION", "INT_TOL", "NEGATIVE", "NONFINITE", "TOO_LARGE", "first_problem", "is_integral", "round_noise"]

INT_TOL = 1e-6
NONFINITE, NEGATIVE, FRACTION, TOO_LARGE = 1, 2, 3, 4


@kernel
def _scan(data):  # pragma: no cover - compiled
    """One pass over the values: (first problem kind, its position, any sub-tolerance float noise)."""
    noisy = False
    for i in range(data.size):
        v = float(data[i])
        if not np.isfinite(v):
            return NONFINITE, i, noisy
        if v < 0:
            return NEGATIVE, i, noisy
        frac = abs(v - np.round(v))
        if frac > INT_TOL:
            return FRACTION, i, noisy
        if frac > 0:
            noisy = True
        if v > 2147483647.0:
            return TOO_LARGE, i, noisy
    return 0, 0, noisy


def first_problem(csr: sp.csr_matrix) -> tuple[int, int, bool]:
    """``(kind, flat position, noisy)``; kind 0 when every value is a valid count."""
    return _scan(csr.data) if csr.data.size else (0, 0, False)


def round_noise(csr: sp.csr_matrix) -> None:
    """Round sub-tolerance float noise in place (and drop values that round to zero)."""
    csr.data = np.round(csr.data)
    csr.eliminate_zeros()


def is_integral(data: np.ndarray) -> bool:
    return bool(np.all(np.abs(data - np.round(data)) <= INT_TOL)) if data.size else True
