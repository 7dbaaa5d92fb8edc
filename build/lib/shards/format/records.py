"""A block of cell records in ragged (flat + offsets) form: the unit every writer and reader exchanges.

Ragged arrays keep a block of cells in three numpy arrays, so that tokenization, sorting and writing
work on whole blocks (vectorized), never on one Python object per cell.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import pyarrow as pa

from ..errors import ShardError

__all__ = ["METADATA_COLUMNS", "CellBlock", "CellRun"]

#: Metadata every record carries (``docs/FORMAT.md``), in this order, before any requested extra columns.
METADATA_COLUMNS: tuple[str, ...] = (
    "cell_id",
    "dataset_id",
    "cell_type",
    "tissue",
    "assay",
    "donor_id",
    "organism",
    "n_counts",
    "n_genes",
)


class CellRun(NamedTuple):
    """Cells ``start:stop`` of a shard as a reader returns them: the tokens of a ``CellBlock`` with the
    cell ids alone for metadata (the loader reads runs of a few hundred cells per window; it reads a
    metadata column only when asked, ``ShardReader.column``)."""

    genes: np.ndarray  # int32, flat
    counts: np.ndarray  # int32, flat
    offsets: np.ndarray  # int64, n + 1, from 0
    ids: np.ndarray  # the cells' ids (object)


@dataclass
class CellBlock:
    """``genes``/``counts`` (int32, flat), ``offsets`` (int64, n+1) and one metadata row per cell."""

    genes: np.ndarray
    counts: np.ndarray
    offsets: np.ndarray
    meta: pa.Table

    def __post_init__(self) -> None:
        if self.genes.dtype != np.int32 or self.counts.dtype != np.int32 or self.offsets.dtype != np.int64:
            raise ShardError(
                f"a cell block needs int32 genes/counts and int64 offsets, got "
                f"{self.genes.dtype}/{self.counts.dtype}/{self.offsets.dtype}"
            )
        if len(self.offsets) != self.meta.num_rows + 1 or self.offsets[0] != 0:
            raise ShardError(f"a cell block's {len(self.offsets)} offsets do not frame {self.meta.num_rows} cells")
        if not self.offsets[-1] == len(self.genes) == len(self.counts):
            raise ShardError(
                f"a cell block's offsets end at {self.offsets[-1]}, its arrays hold "
                f"{len(self.genes)}/{len(self.counts)} values"
            )

    def __len__(self) -> int:
        return self.meta.num_rows

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    @property
    def n_tokens(self) -> int:
        return int(self.offsets[-1])

    def take(self, order: np.ndarray) -> CellBlock:
        """Reorder (or select) cells; the ragged gather is vectorized with one ``repeat``/``cumsum``."""
        order = np.asarray(order, dtype=np.int64)
        lengths = self.lengths[order]
        offsets = np.zeros(len(order) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        starts = self.offsets[:-1][order]
        flat = np.repeat(starts - offsets[:-1], lengths) + np.arange(offsets[-1], dtype=np.int64)
        return CellBlock(self.genes[flat], self.counts[flat], offsets, self.meta.take(pa.array(order)))
