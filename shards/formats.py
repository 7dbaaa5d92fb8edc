"""The registry of shard formats: one name → one writer, its file names and a structural check."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import webdataset_format, zarr_format
from .errors import ShardError
from .records import CellBlock

__all__ = ["FORMATS", "ShardFormat", "get_format"]


def _wds_cells(directory: Path, index: int) -> int:
    return len(webdataset_format.read_idx(directory / webdataset_format.idx_name(index)))


def _zarr_cells(directory: Path, index: int) -> int:
    import zarr

    path = directory / zarr_format.shard_name(index)
    try:
        offsets = zarr.open_group(str(path), mode="r", zarr_format=3)["offsets"]
        n = offsets.shape[0] - 1
        ends = offsets[np.array([0, n])]
    except Exception as exc:
        raise ShardError(f"{path}: cannot read offsets ({exc})") from exc
    if ends[0] != 0:
        raise ShardError(f"{path}: offsets do not start at 0")
    return int(n)


@dataclass(frozen=True)
class ShardFormat:
    name: str
    shard_name: Callable[[int], str]
    sidecar_name: Callable[[int], str]
    write: Callable[[Path, int, int, CellBlock], list[Path]]
    count_cells: Callable[[Path, int], int]
    #: files inside a directory shard that no checksum of the format covers: hashed into the manifest's
    #: ``metadata_sha256`` and checked by readers when they open the shard
    metadata_files: tuple[str, ...] = ()


FORMATS: dict[str, ShardFormat] = {
    "webdataset": ShardFormat(
        "webdataset",
        webdataset_format.shard_name,
        webdataset_format.idx_name,
        webdataset_format.write_shard,
        _wds_cells,
    ),
    "zarr": ShardFormat(
        "zarr",
        zarr_format.shard_name,
        zarr_format.meta_name,
        zarr_format.write_shard,
        _zarr_cells,
        zarr_format.METADATA_FILES,
    ),
}


def get_format(name: str) -> ShardFormat:
    try:
        return FORMATS[name]
    except KeyError:
        raise ShardError(f"unknown shard format {name!r}; choose one of {sorted(FORMATS)}") from None
