"""WebDataset tar shards (contract: ``docs/FORMAT.md``): ``shard-%06d.tar`` and its ``.idx.npy`` sidecar.

Readable by stock ``webdataset.WebDataset(urls, shardshuffle=False).decode()`` and ``tarfile``; the
sidecar holds, per sample, the byte offset and length of its three members, its token count and a crc32
of those bytes, so a reader seeks to a range of cells without scanning the tar and checks each sample.
"""

from .names import IDX_COLUMNS, idx_name, sample_key, shard_name
from .reader import WebDatasetShardReader, count_cells, read_idx, read_samples
from .writer import write_shard

__all__ = [
    "IDX_COLUMNS",
    "WebDatasetShardReader",
    "count_cells",
    "idx_name",
    "read_idx",
    "read_samples",
    "sample_key",
    "shard_name",
    "write_shard",
]
