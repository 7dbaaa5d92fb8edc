"""Read cell ranges of a shard set, whatever its format, as ragged blocks plus cell ids.

Zarr: one slice per array per range (chunks are verified by their crc32c as zarr decodes them).
WebDataset: one byte-range read per range through the ``.idx.npy`` sidecar (per-sample crc32).
Readers open files lazily and keep nothing open across pickling: a DataLoader worker (spawned) builds
its own.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from . import webdataset_format, zarr_format
from .errors import ShardError
from .manifest import load_manifest

__all__ = ["ShardSetReader"]


class ShardSetReader:
    """Cells of one split of a local shard set, by (shard number in the split, start, stop)."""

    def __init__(self, root: Path | str, split: str = "train") -> None:
        self.root = Path(root)
        self.manifest = load_manifest(self.root)
        self.split = split
        self.shards = [s for s in self.manifest["shards"] if s["split"] == split]
        if not self.shards:
            splits = sorted({s["split"] for s in self.manifest["shards"]})
            raise ShardError(f"{self.root}: no shard in split {split!r} (splits: {splits})")
        self.format = self.manifest["format"]
        self.shard_cells = np.array([s["n_cells"] for s in self.shards], dtype=np.int64)
        self.shard_tokens = np.array([s["n_tokens"] for s in self.shards], dtype=np.int64)

    def _path(self, i: int) -> Path:
        return self.root / self.shards[i]["path"]

    @lru_cache(maxsize=8)  # noqa: B019 - a few shards' small tables per worker
    def _zarr_ids(self, i: int) -> np.ndarray:
        meta = self.root / self.shards[i]["files"][0]["path"]
        try:
            return pq.read_table(meta, columns=["cell_id"])["cell_id"].to_numpy(zero_copy_only=False)
        except Exception as exc:
            raise ShardError(f"{meta}: cannot read cell ids ({exc}); run `ingest verify {self.root}`") from exc

    @lru_cache(maxsize=64)  # noqa: B019
    def _idx(self, i: int) -> np.ndarray:
        path = self.root / self.shards[i]["files"][0]["path"]
        if not path.exists():
            raise ShardError(f"{path}: the sample index of {self.shards[i]['path']} is missing; rebuild it")
        idx = webdataset_format.read_idx(path)
        if len(idx) != self.shards[i]["n_cells"]:
            raise ShardError(f"{path}: {len(idx)} samples indexed, manifest says {self.shards[i]['n_cells']}")
        return idx

    def read(self, i: int, start: int, stop: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(genes, counts, offsets, cell_ids)`` of cells ``start:stop`` of shard ``i`` of the split."""
        if not 0 <= start <= stop <= self.shard_cells[i]:
            raise ShardError(f"{self._path(i)}: cell range {start}:{stop} outside 0:{self.shard_cells[i]}")
        path = self._path(i)
        if not path.exists():
            raise ShardError(f"{path}: shard is missing from the shard set")
        if self.format == "zarr":
            block = zarr_format.read_cells(path, start, stop)
            return block.genes, block.counts, block.offsets, self._zarr_ids(i)[start:stop]
        samples = webdataset_format.read_samples(path, self._idx(i), start, stop)
        lengths = np.array([len(g) for g, _, _ in samples], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        genes = np.concatenate([g for g, _, _ in samples]) if samples else np.zeros(0, np.int32)
        counts = np.concatenate([c for _, c, _ in samples]) if samples else np.zeros(0, np.int32)
        ids = np.array([m["cell_id"] for _, _, m in samples], dtype=object)
        return genes.astype(np.int32), counts.astype(np.int32), offsets, ids
