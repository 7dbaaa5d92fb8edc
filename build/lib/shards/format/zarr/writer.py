"""Writing Zarr v3 shards: a group of flat ``genes``/``counts`` (int32) and ``offsets`` (int64), and the
Parquet metadata table beside it.

Arrays use zarr's sharding codec (one file per array) with inner chunks of ``CHUNK`` values, each
zstd-compressed (level 1) and carrying a crc32c, so a range read decompresses only the chunks it
touches and a flipped byte is caught at the chunk that holds it. Measured on an 11.7M-value shard: 64 Ki
chunks wrote in 0.35 s and read in 0.29 s, 256 Ki chunks in 0.17 s / 0.14 s (zstd 1) or 0.27 s /
0.20 s (zstd 3, 12% smaller); zarr's per-chunk overhead dominates small chunks, and read speed matters
most to a training loader.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import zarr
from zarr.codecs import Crc32cCodec, ZstdCodec

from ...storage.atomic import atomic_dir, atomic_file
from ..records import CellBlock
from .names import CHUNK, meta_name, shard_name

__all__ = ["write_shard"]


def _write_array(group: zarr.Group, name: str, data: np.ndarray) -> None:
    outer = max(CHUNK, -(-len(data) // CHUNK) * CHUNK)
    arr = group.create_array(
        name,
        shape=data.shape,
        dtype=data.dtype,
        chunks=(CHUNK,),
        shards=(outer,),
        compressors=[ZstdCodec(level=1), Crc32cCodec()],
    )
    arr[:] = data


def write_shard(directory: Path, index: int, first_cell: int, block: CellBlock) -> list[Path]:
    """Write the group and its Parquet table atomically; return both paths (group first)."""
    group_path = directory / shard_name(index)
    meta_path = directory / meta_name(index)
    with atomic_dir(group_path) as tmp:
        group = zarr.open_group(str(tmp), mode="w", zarr_format=3)
        group.attrs.update({"first_cell": int(first_cell), "n_cells": len(block)})
        _write_array(group, "genes", block.genes.astype("<i4", copy=False))
        _write_array(group, "counts", block.counts.astype("<i4", copy=False))
        _write_array(group, "offsets", block.offsets.astype("<i8", copy=False))
    with atomic_file(meta_path) as tmp:
        pq.write_table(block.meta, tmp, compression="zstd")
    return [group_path, meta_path]
