"""Reading Zarr v3 shards: cell ranges with one slice per array (chunks checked by their crc32c as zarr
decodes them), the offsets array, the Parquet metadata table, and a per-shard reader.

Integrity: chunk data and the shard index carry crc32c, but the group's ``zarr.json`` files do not; the
manifest records their ``metadata_sha256`` (``METADATA_FILES``), which the loader checks when it first
opens a shard, so that no byte of a shard is read unchecked.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import zarr

from ...errors import ShardError
from ...storage.remote import redact
from ..access import ShardAccess
from ..records import CellBlock, CellRun
from .chunks import ShardedArray, load_doc
from .names import shard_name

__all__ = ["ZarrShardReader", "count_cells", "read_cells", "read_meta", "read_offsets"]


def _open(group_path: Path | str, storage_options: dict | None = None) -> zarr.Group:
    """A local path, or a URL opened through zarr's fsspec store (range requests into shard files)."""
    try:
        if "://" in str(group_path):
            return zarr.open_group(str(group_path), mode="r", zarr_format=3, storage_options=storage_options or {})
        return zarr.open_group(str(group_path), mode="r", zarr_format=3)
    except Exception as exc:  # zarr raises several types for missing/garbled metadata
        raise ShardError(f"{group_path}: cannot open the Zarr group ({exc}); rebuild the shard") from exc


def read_cells(
    group_path: Path | str,
    start: int,
    stop: int,
    storage_options: dict | None = None,
    all_offsets: np.ndarray | None = None,
) -> CellBlock:
    """Cells ``start:stop`` with one slice per array (chunks are checked by their crc32c on read).
    ``all_offsets``: the shard's whole offsets array, if the caller holds it (saves a chunk decode)."""
    group = _open(group_path, storage_options)
    try:
        offsets = group["offsets"][start : stop + 1] if all_offsets is None else all_offsets[start : stop + 1]
        lo, hi = int(offsets[0]), int(offsets[-1])
        genes = group["genes"][lo:hi]
        counts = group["counts"][lo:hi]
    except ShardError:
        raise
    except Exception as exc:
        raise ShardError(f"{group_path}: cells {start}:{stop} failed to read ({exc})") from exc
    empty = pa.table({"i": pa.array(np.arange(stop - start))}).select([])
    return CellBlock(genes, counts, (offsets - lo).astype(np.int64), empty)


def read_offsets(group_path: Path | str, storage_options: dict | None = None) -> np.ndarray:
    """The whole ``offsets`` array of a shard (n_cells + 1 values)."""
    try:
        return _open(group_path, storage_options)["offsets"][:]
    except ShardError:
        raise
    except Exception as exc:
        raise ShardError(f"{group_path}: cannot read offsets ({exc})") from exc


def count_cells(directory: Path, index: int) -> int:
    """Cells of shard ``index`` as its offsets array says (two values read, for ``ingest verify``)."""
    path = directory / shard_name(index)
    try:
        offsets = zarr.open_group(str(path), mode="r", zarr_format=3)["offsets"]
        n = offsets.shape[0] - 1
        ends = offsets[np.array([0, n])]
    except Exception as exc:
        raise ShardError(f"{path}: cannot read offsets ({exc})") from exc
    if ends[0] != 0:
        raise ShardError(f"{path}: offsets do not start at 0")
    return int(n)


def read_meta(meta_path: Path) -> pa.Table:
    try:
        return pq.read_table(meta_path)
    except Exception as exc:
        raise ShardError(f"{meta_path}: cannot read the metadata table ({exc})") from exc


#: a read of fewer tokens is decoded in the calling thread (a thread hand-over costs ~20-50 us)
_PARALLEL_TOKENS = 32_768


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


class ZarrShardReader:
    """One Zarr shard, as the loader reads it: its offsets and cell ids (read once), cell ranges, and
    metadata columns from the Parquet table (one column read, not the whole shard).

    The arrays are opened once per process (``chunks.ShardedArray``: the chunk index read once, a range
    of cells read with one byte-range read per array and decoded here); an array in a layout other than
    the writer's is read through zarr-python, its group also opened once."""

    def __init__(self, shard: dict) -> None:
        self.shard = shard
        self._offsets: np.ndarray | None = None
        self._ids: pa.ChunkedArray | None = None
        self._arrays: dict[str, ShardedArray | None] | None = None
        self._group: zarr.Group | None = None

    def table(self, access: ShardAccess, columns: list[str] | None = None) -> pa.Table:
        """The metadata table (the sidecar, checked against its sha256)."""
        data = access.sidecar()
        try:
            return pq.read_table(pa.BufferReader(data), columns=columns)
        except Exception as exc:
            where = access.where(self.shard["files"][0]["path"], remote=True)
            raise ShardError(f"{where}: cannot read the metadata table ({exc}); run `ingest verify`") from exc

    def _array(self, access: ShardAccess, name: str) -> ShardedArray | None:
        if self._arrays is None:
            rel = self.shard["path"]
            arrays = {}
            for key in ("genes", "counts", "offsets"):
                doc_rel = f"{rel}/{key}/zarr.json"
                doc = load_doc(access.whole(doc_rel), access.where(doc_rel))
                arrays[key] = ShardedArray.open(access.read_range, f"{rel}/{key}", doc, access.where(f"{rel}/{key}"))
            self._arrays = arrays
        return self._arrays[name]

    def _values(self, access: ShardAccess, name: str, lo: int, hi: int) -> np.ndarray:
        array = self._array(access, name)
        if array is not None:
            return array.read(access.read_range, lo, hi)
        if self._group is None:
            self._group = _open(access.location(self.shard["path"]), access.storage_options)
        try:
            return self._group[name][lo:hi]
        except Exception as exc:
            raise ShardError(f"{access.where(self.shard['path'])}: {name}[{lo}:{hi}] failed to read ({exc})") from exc

    def offsets(self, access: ShardAccess) -> np.ndarray:
        """The whole offsets array: a read then slices it instead of decoding a chunk of it."""
        if self._offsets is None:
            with _redacted():
                offsets = self._values(access, "offsets", 0, int(self.shard["n_cells"]) + 1)
            if offsets[0] != 0 or np.any(np.diff(offsets) < 0) or offsets[-1] != self.shard["n_tokens"]:
                raise ShardError(
                    f"{access.where(self.shard['path'])}: its offsets are not a partition of its "
                    f"{self.shard['n_tokens']} tokens (corrupt or modified); run `ingest verify`"
                )
            self._offsets = offsets
        return self._offsets

    def cell_tokens(self, access: ShardAccess) -> np.ndarray:
        return np.diff(self.offsets(access)).astype(np.int32)

    def read(self, access: ShardAccess, start: int, stop: int) -> CellRun:
        if self._ids is None:  # kept as Arrow strings: ~30 bytes a cell, not a Python object each
            self._ids = self.table(access, ["cell_id"])["cell_id"]
        ids = self._ids.slice(start, stop - start).to_numpy(zero_copy_only=False)
        offsets = self.offsets(access)[start : stop + 1]
        lo, hi = int(offsets[0]), int(offsets[-1])
        with _redacted():
            if access.executor is not None and hi - lo > _PARALLEL_TOKENS:  # two arrays, two threads
                pending = access.executor.submit(self._values, access, "counts", lo, hi)
                genes = self._values(access, "genes", lo, hi)
                counts = pending.result()
            else:
                genes = self._values(access, "genes", lo, hi)
                counts = self._values(access, "counts", lo, hi)
        return CellRun(genes, counts, (offsets - lo).astype(np.int64), ids)

    def metadata(self, access: ShardAccess) -> pd.DataFrame:
        return self.table(access).to_pandas()

    def column(self, access: ShardAccess, name: str) -> np.ndarray:
        table = self.table(access)
        if name not in table.column_names:
            raise ShardError(f"{self.shard['path']}: no metadata column {name!r} (columns: {table.column_names})")
        return table[name].to_numpy(zero_copy_only=False)
