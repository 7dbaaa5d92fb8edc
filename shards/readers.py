"""Read cell ranges of a shard set, whatever its format and wherever it lives.

Zarr: one slice per array per range (chunks are verified by their crc32c as zarr decodes them).
WebDataset: one byte-range read per range through the ``.idx.npy`` sidecar (per-sample crc32).
A shard set is a local directory or a URL prefix (``remote.py``: retries, optional LRU cache of whole,
hash-checked shards). Readers open files lazily and hold no handle across pickling, so a spawned
DataLoader worker builds its own.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache, lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from . import webdataset_format, zarr_format
from .errors import ShardError
from .manifest import INDEX_NAME, load_manifest, parse_manifest
from .remote import ShardCache, is_remote, open_filesystem, redact, with_retries
from .vocab import Vocabulary, parse_vocab, read_vocab

__all__ = ["ShardSetReader"]


class ShardSetReader:
    """Cells of one split of a shard set, by (shard number in the split, start, stop)."""

    def __init__(
        self,
        root: Path | str,
        split: str = "train",
        *,
        cache_dir: str | Path | None = None,
        cache_bytes: int | None = None,
        storage_options: dict | None = None,
    ) -> None:
        self.root = str(root)
        self.remote = is_remote(self.root)
        self.storage_options = storage_options or {}
        if (cache_dir is None) != (cache_bytes is None):
            raise ShardError("pass cache_dir and cache_bytes together (a cache needs a size limit)")
        self.cache = ShardCache(cache_dir, cache_bytes) if cache_dir is not None and self.remote else None
        if self.remote:
            text = self._fetch(INDEX_NAME).decode()
            self.manifest = parse_manifest(text, f"{redact(self.root)}/{INDEX_NAME}")
        else:
            self.manifest = load_manifest(self.root)
        self.split = split
        self.shards = [s for s in self.manifest["shards"] if s["split"] == split]
        if not self.shards:
            splits = sorted({s["split"] for s in self.manifest["shards"]})
            raise ShardError(f"{redact(self.root)}: no shard in split {split!r} (splits: {splits})")
        self.format = self.manifest["format"]
        self.shard_cells = np.array([s["n_cells"] for s in self.shards], dtype=np.int64)
        self.shard_tokens = np.array([s["n_tokens"] for s in self.shards], dtype=np.int64)

    # -- remote access ---------------------------------------------------------------------------
    @property
    def _fs(self):
        fs, base = open_filesystem(self.root, **self.storage_options)
        return fs, base.rstrip("/")

    def _fetch(self, rel: str, lo: int | None = None, hi: int | None = None) -> bytes:
        fs, base = self._fs
        return with_retries(lambda: fs.cat_file(f"{base}/{rel}", start=lo, end=hi), f"{self.root}/{rel}")

    def vocab(self) -> Vocabulary:
        name = self.manifest["vocab"]["file"]
        if self.remote:
            return parse_vocab(self._fetch(name).decode(), f"{redact(self.root)}/{name}")
        return read_vocab(Path(self.root) / name)

    @contextmanager
    def _local(self, i: int) -> Iterator[Path | None]:
        """Where shard ``i``'s files are on local disk while the caller reads them (the set itself, or the
        cache, which will not evict them meanwhile); None when they are read remotely."""
        if not self.remote:
            yield Path(self.root)
        elif self.cache is None:
            yield None
        else:
            fs, base = self._fs
            with self.cache.use(f"{self.split}-{i:06d}", self.shards[i], fs, base) as local:
                yield local

    # -- per-shard tables ------------------------------------------------------------------------
    @lru_cache(maxsize=8)  # noqa: B019 - a few shards' small tables per worker
    def _zarr_ids(self, i: int) -> np.ndarray:
        rel = self.shards[i]["files"][0]["path"]
        try:
            with self._local(i) as local:
                src = local / rel if local is not None else io.BytesIO(self._fetch(rel))
                return pq.read_table(src, columns=["cell_id"])["cell_id"].to_numpy(zero_copy_only=False)
        except ShardError:
            raise
        except Exception as exc:
            raise ShardError(f"{redact(self.root)}/{rel}: cannot read cell ids ({exc}); run `ingest verify`") from exc

    @lru_cache(maxsize=64)  # noqa: B019
    def _idx(self, i: int) -> np.ndarray:
        rel = self.shards[i]["files"][0]["path"]
        with self._local(i) as local:
            if local is not None and not (local / rel).exists():
                raise ShardError(f"{local / rel}: the sample index of {self.shards[i]['path']} is missing; rebuild it")
            data = None if local is not None else self._fetch(rel)
            idx = webdataset_format.read_idx(local / rel if local is not None else rel, data)
        if len(idx) != self.shards[i]["n_cells"]:
            raise ShardError(f"{rel}: {len(idx)} samples indexed, manifest says {self.shards[i]['n_cells']}")
        return idx

    @cache  # noqa: B019 - one small array per shard, read once per process
    def cell_tokens(self, i: int) -> np.ndarray:
        """Token count of every cell of shard ``i`` (from the Zarr offsets or the WebDataset index)."""
        if self.format == "webdataset":
            return self._idx(i)[:, 2].astype(np.int32)
        rel = self.shards[i]["path"]
        with self._local(i) as local:
            where = str(local / rel) if local is not None else f"{self.root.rstrip('/')}/{rel}"
            return np.diff(zarr_format.read_offsets(where, self.storage_options)).astype(np.int32)

    def metadata(self, i: int) -> pd.DataFrame:
        """The metadata table of shard ``i`` (``cell_id``, ``cell_type``, ... in cell order): the Zarr
        format's parquet file, or the WebDataset samples' JSON members."""
        n = int(self.shard_cells[i])
        if self.format == "webdataset":
            rel = self.shards[i]["path"]
            with self._local(i) as local:
                fetch = None if local is not None else (lambda lo, hi: self._fetch(rel, lo, hi))
                path = local / rel if local is not None else f"{redact(self.root)}/{rel}"
                samples = webdataset_format.read_samples(path, self._idx(i), 0, n, fetch=fetch)
            return pd.DataFrame([m for _, _, m in samples])
        rel = self.shards[i]["files"][0]["path"]
        try:
            with self._local(i) as local:
                src = local / rel if local is not None else io.BytesIO(self._fetch(rel))
                return pq.read_table(src).to_pandas()
        except ShardError:
            raise
        except Exception as exc:
            raise ShardError(
                f"{redact(self.root)}/{rel}: cannot read cell metadata ({exc}); run `ingest verify`"
            ) from exc

    # -- cells -----------------------------------------------------------------------------------
    def read(self, i: int, start: int, stop: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(genes, counts, offsets, cell_ids)`` of cells ``start:stop`` of shard ``i`` of the split."""
        rel = self.shards[i]["path"]
        if not 0 <= start <= stop <= self.shard_cells[i]:
            raise ShardError(f"{rel}: cell range {start}:{stop} outside 0:{self.shard_cells[i]}")
        with self._local(i) as local:
            if local is not None and not (local / rel).exists():
                raise ShardError(f"{local / rel}: shard is missing from the shard set")
            if self.format == "zarr":
                where = str(local / rel) if local is not None else f"{self.root.rstrip('/')}/{rel}"
                block = zarr_format.read_cells(where, start, stop, storage_options=self.storage_options)
                return block.genes, block.counts, block.offsets, self._zarr_ids(i)[start:stop]
            fetch = None if local is not None else (lambda lo, hi: self._fetch(rel, lo, hi))
            path = local / rel if local is not None else f"{redact(self.root)}/{rel}"
            samples = webdataset_format.read_samples(path, self._idx(i), start, stop, fetch=fetch)
        lengths = np.array([len(g) for g, _, _ in samples], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        genes = np.concatenate([g for g, _, _ in samples]) if samples else np.zeros(0, np.int32)
        counts = np.concatenate([c for _, c, _ in samples]) if samples else np.zeros(0, np.int32)
        ids = np.array([m["cell_id"] for _, _, m in samples], dtype=object)
        return genes.astype(np.int32), counts.astype(np.int32), offsets, ids
