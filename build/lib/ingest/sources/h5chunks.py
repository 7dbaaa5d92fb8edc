"""Reading a 1-d chunked HDF5 dataset (an h5ad's ``X/data`` or ``X/indices``) by its chunk index.

Why by hand: through h5py, every read goes through HDF5's filter pipeline under h5py's global lock,
so decompression (lzf or gzip, as anndata and scanpy write h5ad files when asked to compress) runs on
one thread for the whole process, and it was the largest cost of an ingest: 8.4 s of a 34 s build of
60k lzf-compressed cells (two passes; cProfile), ~63 us a cell against ~8 for the same bytes stored
uncompressed. Here the chunk index is read once (``chunk_iter``: file offset and size of each chunk),
a range of values is one ``pread`` of the chunks it touches, and the chunks are decompressed by a
compiled LZF decoder (no GIL) or zlib (which releases it), so units on several threads (``--threads``)
decompress in parallel. A dataset with any other filter (shuffle, fletcher32, blosc, szip, ...), a
chunk whose filters were skipped for another reason, or a size that does not add up, is read through
h5py as before: this path only ever takes what it decodes exactly.
"""

from __future__ import annotations

import os
import zlib
from dataclasses import dataclass

import h5py
import numpy as np

from shards.jit import kernel

__all__ = ["ChunkedArray", "lzf_decompress"]

_LZF, _GZIP = 32000, 1
#: chunks closer than this in the file are read together (reading the gap costs less than another call)
_GAP = 256 << 10


@kernel(nogil=True)
def _lzf(src, dst):  # pragma: no cover - compiled
    """liblzf's decoder: ``src`` into ``dst``; the number of bytes written, or -1 if ``src`` is not a
    valid LZF stream that fills ``dst`` exactly."""
    ip, op = 0, 0
    n_in, n_out = src.size, dst.size
    while ip < n_in:
        ctrl = np.int64(src[ip])
        ip += 1
        if ctrl < 32:  # a literal run of ctrl + 1 bytes
            ctrl += 1
            if op + ctrl > n_out or ip + ctrl > n_in:
                return -1
            for k in range(ctrl):
                dst[op + k] = src[ip + k]
            ip += ctrl
            op += ctrl
        else:  # a back reference: length (3 bits, extended by a byte) and distance (13 bits)
            length = ctrl >> 5
            ref = op - ((ctrl & 0x1F) << 8) - 1
            if length == 7:
                if ip >= n_in:
                    return -1
                length += np.int64(src[ip])
                ip += 1
            if ip >= n_in:
                return -1
            ref -= np.int64(src[ip])
            ip += 1
            length += 2
            if op + length > n_out or ref < 0:
                return -1
            for _ in range(length):  # byte by byte: the source may overlap what is written
                dst[op] = dst[ref]
                op += 1
                ref += 1
    return op


def lzf_decompress(data: bytes | np.ndarray, size: int) -> np.ndarray | None:
    """``data`` decoded into ``size`` bytes, or None if it is not an LZF stream of that size."""
    out = np.empty(size, dtype=np.uint8)
    src = np.frombuffer(data, dtype=np.uint8) if not isinstance(data, np.ndarray) else data
    return out if _lzf(src, out) == size else None


@dataclass
class ChunkedArray:
    """One 1-d dataset read by its chunk index: ``read(lo, hi)`` gives values ``lo:hi``, or None when a
    chunk cannot be decoded here (the caller then reads through h5py)."""

    path: str
    dtype: np.dtype
    length: int
    chunk: int  # values per chunk
    codec: int  # _LZF, _GZIP or 0 (none)
    offsets: np.ndarray  # per chunk: byte offset in the file (-1: never written, all fill value)
    sizes: np.ndarray  # per chunk: stored bytes
    raw: np.ndarray  # per chunk: True when its filters were skipped (stored as is)

    @classmethod
    def open(cls, path: str, dataset: h5py.Dataset) -> ChunkedArray | None:
        """The chunk index of ``dataset`` in the file ``path``, or None if this reader does not take it."""
        if dataset.ndim != 1 or dataset.chunks is None or dataset.dtype.kind not in "iuf":
            return None
        if dataset.dtype.byteorder not in ("<", "=", "|") or dataset.fillvalue != 0:
            return None
        plist = dataset.id.get_create_plist()
        filters = [plist.get_filter(i)[0] for i in range(plist.get_nfilters())]
        if filters not in ([], [_LZF], [_GZIP]):
            return None
        (chunk,) = dataset.chunks
        n_chunks = -(-dataset.shape[0] // chunk)
        offsets = np.full(n_chunks, -1, dtype=np.int64)
        sizes = np.zeros(n_chunks, dtype=np.int64)
        raw = np.zeros(n_chunks, dtype=np.bool_)

        def record(info) -> None:
            i = info.chunk_offset[0] // chunk
            offsets[i], sizes[i], raw[i] = info.byte_offset, info.size, info.filter_mask != 0

        try:
            dataset.id.chunk_iter(record)
        except Exception:  # an HDF5 without chunk iteration: h5py reads it
            return None
        return cls(
            str(path),
            dataset.dtype.newbyteorder("<"),
            dataset.shape[0],
            chunk,
            filters[0] if filters else 0,
            offsets,
            sizes,
            raw,
        )

    def read(self, lo: int, hi: int) -> np.ndarray | None:
        out = np.empty(hi - lo, dtype=self.dtype)
        if hi <= lo:
            return out
        first, last = lo // self.chunk, (hi - 1) // self.chunk
        blobs = self._fetch([c for c in range(first, last + 1) if self.offsets[c] >= 0])
        nbytes = self.chunk * self.dtype.itemsize
        for c in range(first, last + 1):
            base = c * self.chunk
            a, b = max(lo, base), min(hi, base + self.chunk)
            if self.offsets[c] < 0:
                out[a - lo : b - lo] = 0
                continue
            values = self._decode(blobs[c], bool(self.raw[c]), nbytes)
            if values is None:
                return None
            out[a - lo : b - lo] = values.view(self.dtype)[a - base : b - base]
        return out

    def _fetch(self, chunks: list[int]) -> dict[int, np.ndarray]:
        """The stored bytes of ``chunks``: one ``pread`` per run of chunks that lie close together in the
        file (writers interleave the chunks of ``data`` and ``indices``, so a run skips the other's)."""
        out: dict[int, np.ndarray] = {}
        if not chunks:
            return out
        by_place = sorted(chunks, key=lambda c: self.offsets[c])
        fd = os.open(self.path, os.O_RDONLY)
        try:
            i = 0
            while i < len(by_place):
                j, stop = i + 1, int(self.offsets[by_place[i]] + self.sizes[by_place[i]])
                while j < len(by_place) and self.offsets[by_place[j]] <= stop + _GAP:
                    stop = max(stop, int(self.offsets[by_place[j]] + self.sizes[by_place[j]]))
                    j += 1
                start = int(self.offsets[by_place[i]])
                data = np.frombuffer(os.pread(fd, stop - start, start), dtype=np.uint8)
                for c in by_place[i:j]:
                    at = int(self.offsets[c]) - start
                    out[c] = data[at : at + int(self.sizes[c])]
                i = j
        finally:
            os.close(fd)
        return out

    def _decode(self, stored: np.ndarray, raw: bool, nbytes: int) -> np.ndarray | None:
        if raw or self.codec == 0:
            return stored if stored.size == nbytes else None
        if self.codec == _LZF:
            return lzf_decompress(stored, nbytes)
        try:
            values = np.frombuffer(zlib.decompress(stored), dtype=np.uint8)
        except zlib.error:
            return None
        return values if values.size == nbytes else None
