"""Names and constants of the Zarr v3 shard layout (contract: ``docs/FORMAT.md``)."""

from __future__ import annotations

__all__ = ["CHUNK", "METADATA_FILES", "meta_name", "shard_name"]

#: values per inner chunk: 256 Ki int32 values (1 MiB, ~180 cells of ~1,500 genes)
CHUNK = 1 << 18
#: the group's metadata documents (checked against the manifest's ``metadata_sha256`` on open)
METADATA_FILES = ("zarr.json", "counts/zarr.json", "genes/zarr.json", "offsets/zarr.json")


def shard_name(index: int) -> str:
    return f"shard-{index:06d}.zarr"


def meta_name(index: int) -> str:
    return f"shard-{index:06d}.parquet"
