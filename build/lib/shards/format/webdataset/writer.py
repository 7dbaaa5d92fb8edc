"""Writing WebDataset tar shards and their ``.idx.npy`` sample index.

Headers are deterministic (mtime 0, uid/gid 0, empty owner names), so that an identical build is
byte-identical and any stock ``webdataset``/``tarfile`` reader works.
"""

from __future__ import annotations

import io
import json
import tarfile
import zlib
from pathlib import Path

import numpy as np

from ...errors import ShardError
from ...storage.atomic import atomic_file
from ..records import CellBlock
from .names import BLOCK, RECORD, idx_name, sample_key, shard_name

__all__ = ["write_shard"]

_NPY_HEADERS: dict[int, bytes] = {}


def _npy_header(length: int) -> bytes:
    """The .npy v1.0 header of a 1-D little-endian int32 array (cached: it depends on length only)."""
    header = _NPY_HEADERS.get(length)
    if header is None:
        buf = io.BytesIO()
        np.lib.format.write_array_header_1_0(buf, {"descr": "<i4", "fortran_order": False, "shape": (length,)})
        header = _NPY_HEADERS[length] = buf.getvalue()
    return header


def _template() -> bytes:
    info = tarfile.TarInfo("")
    info.mtime, info.mode, info.uid, info.gid, info.uname, info.gname = 0, 0o644, 0, 0, "", ""
    header = bytearray(info.tobuf(format=tarfile.USTAR_FORMAT, encoding="utf-8", errors="strict"))
    header[148:156] = b" " * 8  # the checksum is computed with its own field as spaces
    return bytes(header)


_TEMPLATE = _template()


def _header(name: bytes, size: int) -> bytes:
    """The ustar header ``tarfile`` would write (mtime 0, uid/gid 0, no owner names), ~10x faster.

    Only the name, the size and the checksum differ between our members, so they are patched into a
    template; a test checks the result against ``tarfile.TarInfo.tobuf`` byte for byte.
    """
    if len(name) > 100:
        raise ShardError(f"tar member name {name!r} is longer than 100 bytes")
    header = bytearray(_TEMPLATE)
    header[0 : len(name)] = name
    header[124:136] = b"%011o\0" % size
    header[148:156] = b"%06o\0 " % sum(header)
    return bytes(header)


def _member(name: str, data: bytes) -> bytes:
    return _header(name.encode(), len(data)) + data + b"\0" * (-len(data) % BLOCK)


def write_shard(directory: Path, index: int, first_cell: int, block: CellBlock) -> list[Path]:
    """Write ``shard-%06d.tar`` and its sidecar atomically; return both paths (tar first)."""
    genes = block.genes.astype("<i4", copy=False)
    counts = block.counts.astype("<i4", copy=False)
    rows = block.meta.to_pylist()
    lengths = block.lengths
    idx = np.zeros((len(block), 4), dtype=np.int64)
    parts: list[bytes] = []
    pos = 0
    for i, row in enumerate(rows):
        key = sample_key(first_cell + i)
        a, b = block.offsets[i], block.offsets[i + 1]
        header = _npy_header(int(lengths[i]))
        sample = b"".join(
            (
                _member(f"{key}.genes.npy", header + genes[a:b].tobytes()),
                _member(f"{key}.counts.npy", header + counts[a:b].tobytes()),
                _member(f"{key}.json", json.dumps(row, sort_keys=True, separators=(",", ":")).encode()),
            )
        )
        idx[i] = (pos, len(sample), b - a, zlib.crc32(sample))
        parts.append(sample)
        pos += len(sample)
    end = b"\0" * (2 * BLOCK)
    total = pos + len(end)
    parts.append(end + b"\0" * (-total % RECORD))
    tar_path = directory / shard_name(index)
    idx_path = directory / idx_name(index)
    with atomic_file(tar_path) as tmp, open(tmp, "wb") as fh:
        fh.writelines(parts)
    with atomic_file(idx_path) as tmp, open(tmp, "wb") as fh:
        np.save(fh, idx, allow_pickle=False)
    return [tar_path, idx_path]
