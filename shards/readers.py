"""Read cell ranges of a shard set, whatever its format and wherever it lives.

Zarr: one slice per array per range (chunks are verified by their crc32c as zarr decodes them).
WebDataset: one byte-range read per range through the ``.idx.npy`` sidecar (per-sample crc32).
A shard set is a local directory or a URL prefix (``remote.py``: retries, optional LRU cache of whole,
hash-checked shards). Readers open files lazily and hold no handle across pickling, so a spawned
DataLoader worker builds its own.

No byte is used unchecked: files read whole (the sample index, the Parquet table, Zarr's ``zarr.json``
documents) are checked against the manifest's sha256 when a process first opens the shard; ranges are
checked by the format's own checksums (Zarr chunk and index crc32c, per-sample crc32), and a read that
ends at a tar's last sample checks the end of the archive and the file size too.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache, lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from . import webdataset_format, zarr_format
from .atomic import tree_digest
from .errors import ShardError
from .formats import get_format
from .manifest import INDEX_NAME, load_manifest, parse_manifest
from .remote import ShardCache, is_remote, open_filesystem, redact, with_retries
from .vocab import Vocabulary, parse_vocab, read_vocab

__all__ = ["ShardSetReader"]


@contextmanager
def _redacted() -> Iterator[None]:
    """Zarr's errors name the URL it opened: take any credentials out of the message."""
    try:
        yield
    except ShardError as exc:
        text = redact(str(exc))
        if text == str(exc):
            raise
        raise ShardError(text) from None


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

    # -- whole-file checks ------------------------------------------------------------------------
    def _location(self, rel: str, local: Path | None) -> str:
        """Where a file of the set is read from: the local copy, else its URL (credentials included)."""
        return str(local / rel) if local is not None else f"{self.root.rstrip('/')}/{rel}"

    def _where(self, rel: str, local: Path | None) -> str:
        """The same place, for messages (credentials redacted)."""
        return redact(self._location(rel, local))

    def _whole(self, i: int, rel: str, local: Path | None) -> bytes:
        """A file of shard ``i``, read whole (locally, or fetched)."""
        if local is None:
            return self._fetch(rel)
        try:
            return (local / rel).read_bytes()
        except FileNotFoundError:
            raise ShardError(
                f"{local / rel}: missing from the shard set (a file of {self.shards[i]['path']}); "
                "restore it or rebuild the set"
            ) from None
        except OSError as exc:
            raise ShardError(f"{local / rel}: cannot read it ({exc.strerror})") from exc

    def _sidecar(self, i: int, local: Path | None) -> bytes:
        """Shard ``i``'s sidecar (sample index or metadata table), checked against its sha256."""
        entry = self.shards[i]["files"][0]
        data = self._whole(i, entry["path"], local)
        if len(data) != entry["bytes"] or hashlib.sha256(data).hexdigest() != entry["sha256"]:
            raise ShardError(
                f"{self._where(entry['path'], local)}: fails its sha256 check against the manifest (corrupt, "
                f"truncated or modified; a file of {self.shards[i]['path']}); run `ingest verify`, rebuild the set"
            )
        return data

    @lru_cache(maxsize=4096)  # noqa: B019 - once per shard and process
    def _opened(self, i: int) -> bool:
        """Checks made once when a process first reads shard ``i``: the main file is there (a tar of the
        manifest's size), and a directory shard's metadata documents match ``metadata_sha256``."""
        shard = self.shards[i]
        rel = shard["path"]
        with self._local(i) as local:
            if local is not None:
                main = local / rel
                if not main.exists():
                    raise ShardError(f"{main}: shard is missing from the shard set; restore it or rebuild the set")
                if main.is_file() and main.stat().st_size != shard["bytes"]:
                    raise ShardError(f"{main}: {main.stat().st_size} bytes, the manifest says {shard['bytes']} "
                                     "(truncated or modified); run `ingest verify`, rebuild the set")  # fmt: skip
            files = get_format(self.format).metadata_files
            if files:
                digest = tree_digest(
                    (f, hashlib.sha256(self._whole(i, f"{rel}/{f}", local)).hexdigest()) for f in files
                )
                if digest != shard.get("metadata_sha256"):
                    raise ShardError(
                        f"{self._where(rel, local)}: its zarr.json metadata fails the manifest's metadata_sha256 "
                        "(corrupt or modified); run `ingest verify`, rebuild the set"
                    )
        return True

    # -- per-shard tables ------------------------------------------------------------------------
    def _table(self, i: int, columns: list[str] | None = None) -> pa.Table:
        rel = self.shards[i]["files"][0]["path"]
        with self._local(i) as local:
            data = self._sidecar(i, local)
        try:
            return pq.read_table(pa.BufferReader(data), columns=columns)
        except Exception as exc:
            where = self._where(rel, None)
            raise ShardError(f"{where}: cannot read the metadata table ({exc}); run `ingest verify`") from exc

    @lru_cache(maxsize=8)  # noqa: B019 - a few shards' small tables per worker
    def _zarr_ids(self, i: int) -> np.ndarray:
        return self._table(i, ["cell_id"])["cell_id"].to_numpy(zero_copy_only=False)

    @lru_cache(maxsize=64)  # noqa: B019
    def _idx(self, i: int) -> np.ndarray:
        rel = self.shards[i]["files"][0]["path"]
        with self._local(i) as local:
            data = self._sidecar(i, local)
            idx = webdataset_format.read_idx(self._where(rel, local), data)
        if len(idx) != self.shards[i]["n_cells"]:
            raise ShardError(f"{rel}: {len(idx)} samples indexed, manifest says {self.shards[i]['n_cells']}")
        return idx

    @cache  # noqa: B019 - one small array per shard, read once per process
    def cell_tokens(self, i: int) -> np.ndarray:
        """Token count of every cell of shard ``i`` (from the Zarr offsets or the WebDataset index)."""
        if self.format == "webdataset":
            return self._idx(i)[:, 2].astype(np.int32)
        return np.diff(self._offsets(i)).astype(np.int32)

    @lru_cache(maxsize=64)  # noqa: B019 - 8 bytes per cell, for the shards being read
    def _offsets(self, i: int) -> np.ndarray:
        """A Zarr shard's whole offsets array: a read then slices it instead of decoding a chunk of it."""
        rel = self.shards[i]["path"]
        self._opened(i)
        with self._local(i) as local, _redacted():
            return zarr_format.read_offsets(self._location(rel, local), self.storage_options)

    def metadata(self, i: int) -> pd.DataFrame:
        """The metadata table of shard ``i`` (``cell_id``, ``cell_type``, ... in cell order): the Zarr
        format's parquet file, or the WebDataset samples' JSON members."""
        n = int(self.shard_cells[i])
        if self.format == "webdataset":
            return pd.DataFrame([m for _, _, m in self._samples(i, 0, n)])
        self._opened(i)
        return self._table(i).to_pandas()

    def column(self, i: int, name: str) -> np.ndarray:
        """One metadata column of shard ``i``, in cell order. Zarr reads that column of the Parquet table
        only; WebDataset keeps metadata in each sample's JSON, so the shard is read whole (once per
        process: prefer Zarr for metadata-weighted sampling of large sets)."""
        if self.format == "webdataset":
            rows = [m for _, _, m in self._samples(i, 0, int(self.shard_cells[i]))]
            if rows and name not in rows[0]:
                raise ShardError(f"{self.shards[i]['path']}: no metadata column {name!r} (columns: {sorted(rows[0])})")
            return np.array([m.get(name) for m in rows], dtype=object)
        self._opened(i)
        table = self._table(i)
        if name not in table.column_names:
            raise ShardError(f"{self.shards[i]['path']}: no metadata column {name!r} (columns: {table.column_names})")
        return table[name].to_numpy(zero_copy_only=False)

    def _samples(self, i: int, start: int, stop: int) -> list[tuple[np.ndarray, np.ndarray, dict]]:
        shard = self.shards[i]
        rel = shard["path"]
        self._opened(i)
        idx = self._idx(i)
        with self._local(i) as local:
            fetch = None if local is not None else (lambda lo, hi: self._fetch(rel, lo, hi))
            path = local / rel if local is not None else self._where(rel, None)
            return webdataset_format.read_samples(path, idx, start, stop, fetch=fetch,
                                                  first_cell=shard["first_cell"], size=shard["bytes"])  # fmt: skip

    # -- cells -----------------------------------------------------------------------------------
    def read(self, i: int, start: int, stop: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(genes, counts, offsets, cell_ids)`` of cells ``start:stop`` of shard ``i`` of the split."""
        rel = self.shards[i]["path"]
        if not 0 <= start <= stop <= self.shard_cells[i]:
            raise ShardError(f"{rel}: cell range {start}:{stop} outside 0:{self.shard_cells[i]}")
        if self.format == "zarr":
            self._opened(i)
            ids = self._zarr_ids(i)[start:stop]
            offsets = self._offsets(i)
            with self._local(i) as local, _redacted():
                block = zarr_format.read_cells(self._location(rel, local), start, stop, self.storage_options, offsets)
            return block.genes, block.counts, block.offsets, ids
        samples = self._samples(i, start, stop)
        lengths = np.array([len(g) for g, _, _ in samples], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        genes = np.concatenate([g for g, _, _ in samples]) if samples else np.zeros(0, np.int32)
        counts = np.concatenate([c for _, c, _ in samples]) if samples else np.zeros(0, np.int32)
        ids = np.array([m["cell_id"] for _, _, m in samples], dtype=object)
        return genes.astype(np.int32), counts.astype(np.int32), offsets, ids
