"""Names and constants of the WebDataset shard layout (contract: ``docs/FORMAT.md``).

Each cell is three tar members ``c%012d.genes.npy``, ``.counts.npy`` and ``.json``; beside each
``shard-%06d.tar`` lies ``shard-%06d.idx.npy``, an (n, 4) int64 sample index of each sample's byte
offset, byte length, token count and crc32.
"""

from __future__ import annotations

__all__ = ["BLOCK", "EXTENSIONS", "IDX_COLUMNS", "RECORD", "idx_name", "sample_key", "shard_name"]

IDX_COLUMNS = ("offset", "length", "n_tokens", "crc32")
EXTENSIONS = ("genes.npy", "counts.npy", "json")
BLOCK = 512
RECORD = 20 * BLOCK  # tarfile pads archives to whole records; so do we, to match stock tools


def shard_name(index: int) -> str:
    return f"shard-{index:06d}.tar"


def idx_name(index: int) -> str:
    return f"shard-{index:06d}.idx.npy"


def sample_key(cell_index: int) -> str:
    return f"c{cell_index:012d}"
