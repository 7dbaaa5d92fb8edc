"""Zarr v3 shards (contract: ``docs/FORMAT.md``): ``shard-%06d.zarr/`` with flat ``genes``/``counts``
(int32) and ``offsets`` (int64), and the metadata table ``shard-%06d.parquet`` beside the group.

Readable by stock ``zarr.open_group`` and ``pyarrow.parquet``.
"""

from .names import CHUNK, METADATA_FILES, meta_name, shard_name
from .reader import ZarrShardReader, count_cells, read_cells, read_meta, read_offsets
from .writer import write_shard

__all__ = [
    "CHUNK",
    "METADATA_FILES",
    "ZarrShardReader",
    "count_cells",
    "meta_name",
    "read_cells",
    "read_meta",
    "read_offsets",
    "shard_name",
    "write_shard",
]
