"""The pure arithmetic of a build: work units and the shard layout.

Everything here is a function of the options and the inputs' sizes only, never of ``--workers``: that is
what makes the output byte-identical whatever the degree of parallelism.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .split import SPLIT_NAMES

__all__ = ["ShardLayout", "Unit", "make_units", "shard_layout"]


@dataclass(frozen=True)
class Unit:
    """A contiguous row range of one input file: the grain of parallelism and of resumption."""

    index: int
    file: int
    start: int
    stop: int


def make_units(n_obs: list[int], unit_cells: int) -> list[Unit]:
    units = []
    for f, n in enumerate(n_obs):
        for start in range(0, n, unit_cells):
            units.append(Unit(len(units), f, start, min(n, start + unit_cells)))
    return units


@dataclass(frozen=True)
class ShardLayout:
    """Shards of each split, in order train then val; sizes within a split differ by at most one."""

    split_cells: dict[str, int]
    bounds: dict[str, np.ndarray]  # per split: position bounds of its shards (n_shards + 1)
    first_shard: dict[str, int]
    first_cell: dict[str, int]

    @property
    def n_shards(self) -> int:
        return sum(len(b) - 1 for b in self.bounds.values())

    def shards(self) -> list[tuple[int, str, int, int]]:
        """``(shard index, split, first cell, n_cells)`` for every shard."""
        out = []
        for split in SPLIT_NAMES:
            b = self.bounds[split]
            for j in range(len(b) - 1):
                out.append(
                    (self.first_shard[split] + j, split, self.first_cell[split] + int(b[j]), int(b[j + 1] - b[j]))
                )
        return out


def shard_layout(split_cells: dict[str, int], cells_per_shard: int) -> ShardLayout:
    bounds, first_shard, first_cell = {}, {}, {}
    shard = cell = 0
    for split in SPLIT_NAMES:
        n = split_cells.get(split, 0)
        k = -(-n // cells_per_shard)
        bounds[split] = (np.arange(k + 1, dtype=np.int64) * n) // max(k, 1)
        first_shard[split], first_cell[split] = shard, cell
        shard += k
        cell += n
    return ShardLayout(dict(split_cells), bounds, first_shard, first_cell)
