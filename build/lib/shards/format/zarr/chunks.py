"""Reading a 1-d sharded Zarr v3 array of our layout straight from its shard file: the chunk index once,
then for a range of values only the inner chunks it touches, in one byte-range read, each chunk's
crc32c checked before zstd decodes it.

Why by hand: a range read through zarr-python costs ~10-25 ms whatever its size (opening the group,
resolving metadata, the async codec pipeline per call), and the loader makes one per run of ~256
cells. Measured side by side on the benchmark corpus (``benchmarks/results/2026-12-03-hot-paths``):
zarr-python with the arrays opened once, the ``zarrs`` Rust codec pipeline, ``tensorstore``, and this
reader; this one was the fastest, and it keeps zarr's integrity checks (the index's and every chunk's
crc32c). It accepts only the exact codec chain the writer produces (``sharding_indexed`` of
``bytes``/``zstd``/``crc32c`` inner chunks, index at the end, ``bytes``/``crc32c``); any other array is
read through zarr-python, so a shard set written by another tool still opens.

A byte source is ``read_range(rel, lo, hi) -> bytes`` (a local file or an HTTP/S3 range request): the
same code serves local and remote shards.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

import google_crc32c
import numpy as np
from numcodecs import Zstd

from ...errors import ShardError

__all__ = ["ShardedArray", "load_doc", "parse_layout"]

_EMPTY = np.uint64(2**64 - 1)
_ZSTD = Zstd()
ReadRange = Callable[[str, int, "int | None"], bytes]  # (file, lo, hi); lo < 0, hi None: a suffix


def parse_layout(doc: dict) -> tuple[np.dtype, int, int, int] | None:
    """``(dtype, length, chunk, shard)`` of a 1-d array in the writer's layout, or None if it is not."""
    try:
        (sharding,) = doc["codecs"]
        conf = sharding["configuration"]
        inner = [c["name"] for c in conf["codecs"]]
        index = [c["name"] for c in conf["index_codecs"]]
        little = all(
            c.get("configuration", {}).get("endian", "little") == "little"
            for c in conf["codecs"] + conf["index_codecs"]
            if c["name"] == "bytes"
        )
        ok = (
            doc["zarr_format"] == 3
            and sharding["name"] == "sharding_indexed"
            and inner == ["bytes", "zstd", "crc32c"]
            and index == ["bytes", "crc32c"]
            and conf.get("index_location", "end") == "end"
            and little
            and doc["data_type"] in ("int32", "int64")
            and len(doc["shape"]) == 1
            and doc["chunk_key_encoding"]["name"] == "default"
            and doc["chunk_key_encoding"].get("configuration", {}).get("separator", "/") == "/"
            and not doc.get("storage_transformers")
        )
        if not ok:
            return None
        (length,) = doc["shape"]
        (chunk,) = conf["chunk_shape"]
        (shard,) = doc["chunk_grid"]["configuration"]["chunk_shape"]
        if length > shard or doc["fill_value"] != 0:  # one shard file per array, fill 0
            return None
        return np.dtype("<" + ("i4" if doc["data_type"] == "int32" else "i8")), int(length), int(chunk), int(shard)
    except (KeyError, TypeError, ValueError):
        return None


def _checked(data: bytes | memoryview, where: str) -> memoryview:
    """The payload of ``data`` whose last 4 bytes are its little-endian crc32c (zarr's crc32c codec)."""
    view = memoryview(data)
    payload = np.frombuffer(view[:-4], dtype=np.uint8)  # google_crc32c takes arrays, not memoryviews
    if len(view) < 4 or google_crc32c.value(payload) != int.from_bytes(view[-4:], "little"):
        raise ShardError(f"{where}: fails its crc32c check (corrupt or modified); run `ingest verify`")
    return view[:-4]


@dataclass
class ShardedArray:
    """One array of a shard: ``read(lo, hi)`` gives values ``lo:hi``. Holds the chunk index (16 bytes a
    chunk) and the last decoded chunk, so that consecutive runs sharing a chunk decode it once."""

    rel: str  # the shard file, relative to the set's root: "<group>/<array>/c/0"
    where: str  # for messages
    dtype: np.dtype
    length: int
    chunk: int
    index: np.ndarray  # (n_chunks, 2) uint64: byte offset, byte length
    _last: tuple[int, np.ndarray] | None = None

    @classmethod
    def open(cls, read_range: ReadRange, array_rel: str, doc: dict, where: str) -> ShardedArray | None:
        """The array at ``array_rel`` (its ``zarr.json`` parsed as ``doc``; its chunk index read with one
        suffix read), or None if its layout is not the writer's."""
        layout = parse_layout(doc)
        if layout is None:
            return None
        dtype, length, chunk, shard = layout
        n_chunks = -(-shard // chunk)
        rel = f"{array_rel}/c/0"
        nbytes = 16 * n_chunks + 4
        data = read_range(rel, -nbytes, None)
        if len(data) != nbytes:
            raise ShardError(f"{where}/c/0: shorter than its chunk index; run `ingest verify`")
        raw = _checked(data, f"{where}/c/0 (chunk index)")
        index = np.frombuffer(raw, dtype="<u8").reshape(n_chunks, 2)
        return cls(rel, where, dtype, length, chunk, index.copy())

    def read(self, read_range: ReadRange, lo: int, hi: int, out: np.ndarray | None = None) -> np.ndarray:
        """Values ``lo:hi`` (into ``out`` if given). A chunk the range covers whole is decoded and
        copied into the result; a chunk it covers in part is decoded once and kept for the next run."""
        if not 0 <= lo <= hi <= self.length:
            raise ShardError(f"{self.where}: values {lo}:{hi} outside 0:{self.length}")
        if out is None:
            out = np.empty(hi - lo, dtype=self.dtype)
        if hi == lo:
            return out
        first, last = lo // self.chunk, (hi - 1) // self.chunk
        cached, kept = self._last if self._last is not None else (-1, None)
        blobs = self._fetch(read_range, [c for c in range(first, last + 1) if c != cached])
        for c in range(first, last + 1):
            base = c * self.chunk
            a, b = max(lo, base), min(hi, base + self.chunk)
            if c == cached:
                out[a - lo : b - lo] = kept[a - base : b - base]
            elif b - a == self.chunk:
                self._decode(c, blobs[c], out[a - lo : b - lo])
            else:
                values = self._decode(c, blobs[c])
                self._last = (c, values)
                out[a - lo : b - lo] = values[a - base : b - base]
        return out

    def _fetch(self, read_range: ReadRange, chunks: list[int]) -> dict[int, memoryview | None]:
        """The encoded bytes of ``chunks``: one range read spanning them (the writer stores chunks in
        order, back to back), or None for a chunk never written (all fill value)."""
        present = [c for c in chunks if self.index[c, 0] != _EMPTY]
        out: dict[int, memoryview | None] = dict.fromkeys(chunks)
        if not present:
            return out
        start = int(min(self.index[c, 0] for c in present))
        stop = int(max(self.index[c, 0] + self.index[c, 1] for c in present))
        data = memoryview(read_range(self.rel, start, stop))
        if len(data) != stop - start:
            raise ShardError(f"{self.where}/c/0: short read at bytes {start}:{stop}; run `ingest verify`")
        for c in present:
            a = int(self.index[c, 0]) - start
            out[c] = data[a : a + int(self.index[c, 1])]
        return out

    def _decode(self, c: int, blob: memoryview | None, into: np.ndarray | None = None) -> np.ndarray:
        """Chunk ``c`` (``chunk`` values), after its crc32c is checked; copied into ``into`` if given.
        (numcodecs' ``decode(out=...)`` is not used: it was no faster here, and the size check below
        must come before any value is written.)"""
        if blob is None:
            values = np.zeros(self.chunk, dtype=self.dtype)
        else:
            payload = _checked(blob, f"{self.where}/c/0 (chunk {c})")
            try:
                values = np.frombuffer(_ZSTD.decode(payload), dtype=self.dtype)
            except Exception as exc:
                raise ShardError(f"{self.where}/c/0 (chunk {c}): cannot decode ({exc}); run `ingest verify`") from exc
            if values.size != self.chunk:
                raise ShardError(f"{self.where}/c/0 (chunk {c}): {values.size} values, expected {self.chunk}")
        if into is None:
            return values
        into[:] = values
        return into


def load_doc(data: bytes, where: str) -> dict:
    try:
        return json.loads(data)
    except ValueError as exc:
        raise ShardError(f"{where}: not JSON ({exc}); rebuild the shard") from exc
