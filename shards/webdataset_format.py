"""WebDataset tar shards (contract) and their ``.idx.npy`` sidecar.

Each cell is three tar members ``c%012d.genes.npy``, ``.counts.npy`` and ``.json`` with deterministic
headers (mtime 0, uid/gid 0, empty owner names), so that an identical build is byte-identical and any
stock ``webdataset``/``tarfile`` reader works. The sidecar holds, per sample, the byte offset and length
of its three members, its token count and a crc32 of those bytes: a reader seeks to a range of cells
without scanning the tar and checks each sample it reads.
"""

from __future__ import annotations

import io
import json
import tarfile
import zlib
from pathlib import Path

import numpy as np

from .atomic import atomic_file
from .errors import ShardError
from .records import CellBlock

__all__ = [
    "IDX_COLUMNS",
    "idx_name",
    "read_idx",
    "read_samples",
    "sample_key",
    "shard_name",
    "write_shard",
]

IDX_COLUMNS = ("offset", "length", "n_tokens", "crc32")
_BLOCK = 512
_RECORD = 20 * _BLOCK  # tarfile pads archives to whole records; so do we, to match stock tools
_NPY_HEADERS: dict[int, bytes] = {}


def shard_name(index: int) -> str:
    return f"shard-{index:06d}.tar"


def idx_name(index: int) -> str:
    return f"shard-{index:06d}.idx.npy"


def sample_key(cell_index: int) -> str:
    return f"c{cell_index:012d}"


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
    return _header(name.encode(), len(data)) + data + b"\0" * (-len(data) % _BLOCK)


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
    end = b"\0" * (2 * _BLOCK)
    total = pos + len(end)
    parts.append(end + b"\0" * (-total % _RECORD))
    tar_path = directory / shard_name(index)
    idx_path = directory / idx_name(index)
    with atomic_file(tar_path) as tmp, open(tmp, "wb") as fh:
        fh.writelines(parts)
    with atomic_file(idx_path) as tmp, open(tmp, "wb") as fh:
        np.save(fh, idx, allow_pickle=False)
    return [tar_path, idx_path]


def read_idx(path: Path | str, data: bytes | None = None) -> np.ndarray:
    """The sample index, from ``path`` or from its bytes (remote readers)."""
    try:
        idx = np.load(io.BytesIO(data) if data is not None else path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise ShardError(f"{path}: unreadable sample index ({exc}); rebuild the shard set") from exc
    if idx.ndim != 2 or idx.shape[1] != len(IDX_COLUMNS) or idx.dtype != np.int64:
        raise ShardError(f"{path}: sample index has shape {idx.shape} {idx.dtype}, expected (n, 4) int64")
    return idx


def _parse_sample(buf: bytes, where: str) -> dict[str, bytes]:
    members: dict[str, bytes] = {}
    pos = 0
    while pos < len(buf):
        try:
            info = tarfile.TarInfo.frombuf(buf[pos : pos + _BLOCK], "utf-8", "strict")
        except tarfile.TarError as exc:
            raise ShardError(f"{where}: bad tar header ({exc})") from exc
        if info.name.startswith("/") or ".." in info.name.split("/"):
            raise ShardError(f"{where}: refusing tar member with unsafe name {info.name!r}")
        start = pos + _BLOCK
        members[info.name.split(".", 1)[1]] = buf[start : start + info.size]
        pos = start + info.size + (-info.size % _BLOCK)
    return members


def _local_range(path: Path, lo: int, hi: int) -> bytes:
    with open(path, "rb") as fh:
        fh.seek(lo)
        return fh.read(hi - lo)


def read_samples(
    tar_path: Path | str, idx: np.ndarray, start: int, stop: int, *, check: bool = True, fetch=None
) -> list[tuple[np.ndarray, np.ndarray, dict]]:
    """Read samples ``start:stop`` with one contiguous byte-range read, checking each sample's crc32.

    ``fetch(lo, hi) -> bytes`` reads the range (a local file by default; remote readers pass theirs).
    """
    if not 0 <= start <= stop <= len(idx):
        raise ShardError(f"{tar_path}: sample range {start}:{stop} outside 0:{len(idx)}")
    if start == stop:
        return []
    lo = int(idx[start, 0])
    hi = int(idx[stop - 1, 0] + idx[stop - 1, 1])
    data = fetch(lo, hi) if fetch is not None else _local_range(Path(tar_path), lo, hi)
    if len(data) != hi - lo:
        raise ShardError(f"{tar_path}: truncated (wanted bytes {lo}:{hi}); rebuild or re-download it")
    out = []
    for i in range(start, stop):
        off, length, n_tokens, crc = (int(v) for v in idx[i])
        sample = data[off - lo : off - lo + length]
        if check and zlib.crc32(sample) != crc:
            raise ShardError(f"{tar_path}: sample {i} fails its crc32 check; the shard is corrupt")
        members = _parse_sample(sample, f"{tar_path} sample {i}")
        genes = np.load(io.BytesIO(members["genes.npy"]), allow_pickle=False)
        counts = np.load(io.BytesIO(members["counts.npy"]), allow_pickle=False)
        if len(genes) != n_tokens:
            raise ShardError(f"{tar_path}: sample {i} has {len(genes)} tokens, index says {n_tokens}")
        out.append((genes, counts, json.loads(members["json"])))
    return out
