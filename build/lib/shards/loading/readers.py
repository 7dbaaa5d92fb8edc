"""Read cell ranges of a shard set, whatever its format and wherever it lives.

A shard set is a local directory or a URL prefix (``storage.remote``: retries; ``storage.cache``: an
optional LRU cache of whole, hash-checked shards). Per shard, the format's own reader (chosen through
the registry, ``format.get_format``) reads ranges, token counts and metadata columns, and keeps what
it read once (sample index, offsets, cell ids). Readers open files lazily and hold no handle across
pickling, so a spawned DataLoader worker builds its own.

No byte is used unchecked: files read whole (the sample index, the Parquet table, Zarr's ``zarr.json``
documents) are checked against the manifest's sha256 when a process first opens the shard; ranges are
checked by the format's own checksums (Zarr chunk and index crc32c, per-sample crc32), and a read that
ends at a tar's last sample checks the end of the archive and the file size too.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..errors import ShardError
from ..format.access import ShardAccess
from ..format.labels import LabelCounts, read_label_counts
from ..format.manifest import INDEX_NAME, Manifest, ShardEntry, load_manifest, parse_manifest
from ..format.records import CellRun
from ..format.registry import ShardReader, get_format
from ..format.vocab import Vocabulary, parse_vocab, read_vocab
from ..storage.atomic import sha256_file
from ..storage.cache import ShardCache
from ..storage.remote import is_remote, open_filesystem, redact, with_retries

__all__ = ["ShardSetReader"]

#: per-shard readers kept per process (each holds a shard's index or offsets and cell ids)
_OPEN_SHARDS = 64


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
        io_threads: int = 1,
    ) -> None:
        self.root = str(root)
        self.io_threads = io_threads
        self.remote = is_remote(self.root)
        self.storage_options = storage_options or {}
        if (cache_dir is None) != (cache_bytes is None):
            raise ShardError("pass cache_dir and cache_bytes together (a cache needs a size limit)")
        self.cache = ShardCache(cache_dir, cache_bytes) if cache_dir is not None and self.remote else None
        if self.remote:
            text = self.fetch(INDEX_NAME).decode()
            doc = parse_manifest(text, f"{redact(self.root)}/{INDEX_NAME}")
        else:
            doc = load_manifest(self.root)
        self.manifest = Manifest.from_dict(doc)
        self.split = split
        self.shards: list[ShardEntry] = list(self.manifest.split(split))
        if not self.shards:
            raise ShardError(f"{redact(self.root)}: no shard in split {split!r} (splits: {self.manifest.split_names})")
        self.format = self.manifest.format
        self._format = get_format(self.format)
        self.shard_cells = np.array([s.n_cells for s in self.shards], dtype=np.int64)
        self.shard_tokens = np.array([s.n_tokens for s in self.shards], dtype=np.int64)
        self._reset()

    def _reset(self) -> None:
        self._pool: ThreadPoolExecutor | None = None  # made on first read: each process its own
        self._readers: OrderedDict[int, ShardReader] = OrderedDict()
        self._opened: set[int] = set()
        self._tokens: dict[int, np.ndarray] = {}

    def __getstate__(self) -> dict[str, Any]:
        """Picklable without what this process read: a spawned worker opens shards itself."""
        state = dict(self.__dict__)
        for key in ("_readers", "_opened", "_tokens", "_pool"):
            state.pop(key)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._reset()

    # -- remote access ---------------------------------------------------------------------------
    def fetch(self, rel: str, lo: int | None = None, hi: int | None = None) -> bytes:
        """A file of the set (or a byte range of it), read through fsspec with retries."""
        fs, base = open_filesystem(self.root, **self.storage_options)
        base = base.rstrip("/")
        return with_retries(lambda: fs.cat_file(f"{base}/{rel}", start=lo, end=hi), f"{self.root}/{rel}")

    def read_file(self, key: str) -> bytes:
        """The file a manifest entry names (``vocab``, ``gene_medians``), local or fetched."""
        name = self.manifest.file(key).file
        return self.fetch(name) if self.remote else (Path(self.root) / name).read_bytes()

    def label_counts(self, column: str) -> LabelCounts | None:
        """Per-shard counts of ``column``'s values over this split's shards (``labels.npz``), or None
        when the set has none for it (built before the counts, or not a categorical column)."""
        entry = self.manifest.labels
        if entry is None or column not in entry.columns:
            return None
        # local: checked by streaming, then only this column's members are loaded; remote: fetched whole
        data = self.read_file("labels") if self.remote else Path(self.root) / entry.file
        digest = hashlib.sha256(data).hexdigest() if isinstance(data, bytes) else sha256_file(data)
        if digest != entry.sha256:
            raise ShardError(
                f"{redact(self.root)}/{entry.file}: sha256 differs from the manifest (corrupt or modified); "
                "restore it or rebuild the shard set"
            )
        where = {s.path: i for i, s in enumerate(self.manifest.shards)}
        counts = read_label_counts(data, column, redact(self.root))
        return counts.select(np.array([where[s.path] for s in self.shards], dtype=np.int64))

    def vocab(self) -> Vocabulary:
        name = self.manifest.vocab.file
        if self.remote:
            return parse_vocab(self.fetch(name).decode(), f"{redact(self.root)}/{name}")
        return read_vocab(Path(self.root) / name)

    @contextmanager
    def open_shard(self, i: int, check: bool = True) -> Iterator[ShardAccess]:
        """Shard ``i``'s files while the caller reads them: on local disk (the set itself, or the cache,
        which will not evict them meanwhile), or read remotely. With ``check``, the first access of a
        process checks the shard's main file and metadata documents (``ShardAccess.check_opened``)."""
        shard = self.shards[i]
        if self.io_threads > 1 and self._pool is None:
            self._pool = ThreadPoolExecutor(self.io_threads - 1, thread_name_prefix="cellshard-decode")
        common = {"fetch": self.fetch, "storage_options": self.storage_options, "executor": self._pool}
        if not self.remote:
            yield self._checked(i, ShardAccess(shard.raw, self.root, Path(self.root), **common), check)
        elif self.cache is None:
            yield self._checked(i, ShardAccess(shard.raw, self.root, None, **common), check)
        else:
            fs, base = open_filesystem(self.root, **self.storage_options)
            with self.cache.use(f"{self.split}-{i:06d}", shard, fs, base.rstrip("/")) as local:
                yield self._checked(i, ShardAccess(shard.raw, self.root, local, **common), check)

    def _checked(self, i: int, access: ShardAccess, check: bool) -> ShardAccess:
        if check and i not in self._opened:
            access.check_opened(self._format.metadata_files)
            self._opened.add(i)
        return access

    def _reader(self, i: int) -> ShardReader:
        reader = self._readers.get(i)
        if reader is None:
            reader = self._readers[i] = self._format.reader(self.shards[i].raw)
            if len(self._readers) > _OPEN_SHARDS:
                self._readers.popitem(last=False)
        else:
            self._readers.move_to_end(i)
        return reader

    # -- what the loader reads ---------------------------------------------------------------------
    def cell_tokens(self, i: int) -> np.ndarray:
        """Token count of every cell of shard ``i`` (from the Zarr offsets or the WebDataset index)."""
        tokens = self._tokens.get(i)
        if tokens is None:
            # a format without directory metadata keeps token counts in its (hash-checked) sidecar: its
            # main file is checked at the first read of cells, as a corrupt shard may be skipped then
            with self.open_shard(i, check=bool(self._format.metadata_files)) as access:
                tokens = self._tokens[i] = self._reader(i).cell_tokens(access)
        return tokens

    def metadata(self, i: int) -> pd.DataFrame:
        """The metadata table of shard ``i`` (``cell_id``, ``cell_type``, ... in cell order)."""
        with self.open_shard(i) as access:
            return self._reader(i).metadata(access)

    def column(self, i: int, name: str) -> np.ndarray:
        """One metadata column of shard ``i``, in cell order (WebDataset reads the shard whole for it,
        once per process: prefer Zarr for metadata-weighted sampling of large sets)."""
        with self.open_shard(i) as access:
            return self._reader(i).column(access, name)

    def read(self, i: int, start: int, stop: int) -> CellRun:
        """``(genes, counts, offsets, cell_ids)`` of cells ``start:stop`` of shard ``i`` of the split."""
        if not 0 <= start <= stop <= self.shard_cells[i]:
            raise ShardError(f"{self.shards[i].path}: cell range {start}:{stop} outside 0:{self.shard_cells[i]}")
        with self.open_shard(i) as access:
            return self._reader(i).read(access, start, stop)
