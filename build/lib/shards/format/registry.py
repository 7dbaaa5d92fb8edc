"""The registry of shard formats: one name → one writer, one per-shard reader, its file names and a
structural check. Nothing outside a format's own package branches on the format's name; everything
else goes through ``get_format``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ..errors import ShardError
from . import webdataset, zarr
from .access import ShardAccess
from .records import CellBlock, CellRun

__all__ = ["FORMATS", "ShardAccess", "ShardFormat", "ShardReader", "get_format"]


class ShardReader(Protocol):
    """What the loader asks of one shard, whatever its format (one object per shard and process, which
    keeps what it read once: the sample index, the offsets, the cell ids)."""

    def cell_tokens(self, access: ShardAccess) -> np.ndarray:
        """Token count of every cell (int32)."""

    def read(self, access: ShardAccess, start: int, stop: int) -> CellRun:
        """``(genes, counts, offsets, cell_ids)`` of cells ``start:stop``."""

    def column(self, access: ShardAccess, name: str) -> np.ndarray:
        """One metadata column, in cell order."""

    def metadata(self, access: ShardAccess) -> Any:
        """The metadata table (a pandas DataFrame), in cell order."""


@dataclass(frozen=True)
class ShardFormat:
    name: str
    shard_name: Callable[[int], str]
    sidecar_name: Callable[[int], str]
    write: Callable[[Path, int, int, CellBlock], list[Path]]
    count_cells: Callable[[Path, int], int]
    reader: Callable[[dict], ShardReader]
    #: files inside a directory shard that no checksum of the format covers: hashed into the manifest's
    #: ``metadata_sha256`` and checked by readers when they open the shard
    metadata_files: tuple[str, ...] = ()


FORMATS: dict[str, ShardFormat] = {
    "webdataset": ShardFormat(
        "webdataset",
        webdataset.shard_name,
        webdataset.idx_name,
        webdataset.write_shard,
        webdataset.count_cells,
        webdataset.WebDatasetShardReader,
    ),
    "zarr": ShardFormat(
        "zarr",
        zarr.shard_name,
        zarr.meta_name,
        zarr.write_shard,
        zarr.count_cells,
        zarr.ZarrShardReader,
        zarr.METADATA_FILES,
    ),
}


def get_format(name: str) -> ShardFormat:
    try:
        return FORMATS[name]
    except KeyError:
        raise ShardError(f"unknown shard format {name!r}; choose one of {sorted(FORMATS)}") from None
