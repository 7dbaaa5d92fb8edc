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
import re
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
_EXTENSIONS = ("genes.npy", "counts.npy", "json")
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
    ends = idx[:, 0] + idx[:, 1]
    if len(idx) and (idx[0, 0] != 0 or (idx[1:, 0] != ends[:-1]).any() or (idx[:, 1] <= 0).any()):
        raise ShardError(f"{path}: sample index does not describe contiguous samples from byte 0; rebuild the shard")
    return idx


def _read_header(block: bytes, where: str) -> tuple[str, int, bool]:
    """``(name, size, is_regular_file)`` of a tar header; plain ustar file headers are parsed directly
    (the hot path: three per cell).

    Anything else (GNU/pax extensions, base-256 sizes, links, another writer's quirks) goes through
    ``tarfile``, which also raises on a malformed block."""
    if (
        len(block) == _BLOCK
        and block[257:262] == b"ustar"
        and block[156:157] in (b"0", b"\0")
        and not block[124] & 0x80
        and block[345] == 0
    ):
        try:
            chksum = int(block[148:156].split(b"\0", 1)[0].strip() or b"0", 8)
            size = int(block[124:136].split(b"\0", 1)[0].strip() or b"0", 8)
        except ValueError as exc:
            raise ShardError(f"{where}: bad tar header ({exc})") from exc
        if chksum != sum(block[:148]) + sum(block[156:]) + 8 * 32:
            raise ShardError(f"{where}: bad tar header (checksum mismatch)")
        try:
            name = block[:100].split(b"\0", 1)[0].decode("utf-8", "strict")
        except UnicodeDecodeError as exc:
            raise ShardError(f"{where}: bad tar header (member name is not UTF-8)") from exc
        return name, size, True
    try:
        info = tarfile.TarInfo.frombuf(block, "utf-8", "strict")
    except (tarfile.TarError, UnicodeDecodeError) as exc:
        raise ShardError(f"{where}: bad tar header ({exc})") from exc
    return info.name, info.size, info.isreg()


def _parse_sample(buf: bytes, where: str, key: str | None = None) -> dict[str, bytes]:
    """The members of one sample by extension. Only plain files named ``<key>.<ext>`` are accepted:
    an absolute or ``..`` name, a link, a device or a member of another sample is refused (a tar from
    elsewhere must not make a reader touch paths outside the sample)."""
    members: dict[str, bytes] = {}
    pos = 0
    while pos < len(buf):
        name, size, regular = _read_header(buf[pos : pos + _BLOCK], where)
        if name.startswith("/") or ".." in name.split("/"):
            raise ShardError(f"{where}: refusing tar member with unsafe name {name!r}")
        if not regular:
            raise ShardError(f"{where}: refusing tar member {name!r}: not a regular file")
        stem, _, ext = name.partition(".")
        if key is not None and stem != key:
            raise ShardError(f"{where}: member {name!r} does not belong to sample {key}")
        if ext not in _EXTENSIONS or ext in members:
            raise ShardError(f"{where}: unexpected or repeated member {name!r} (expected genes.npy, counts.npy, json)")
        start = pos + _BLOCK
        if start + size > len(buf):
            raise ShardError(f"{where}: member {name!r} runs past the end of its sample")
        members[ext] = buf[start : start + size]
        pos = start + size + (-size % _BLOCK)
    missing = [e for e in _EXTENSIONS if e not in members]
    if missing:
        raise ShardError(f"{where}: sample lacks its {', '.join(missing)} member(s)")
    return members


_NPY_1D = re.compile(rb"\{'descr': '([<|][iuf][1248])', 'fortran_order': False, 'shape': \((\d+),\), \} *\n")


def _npy(data: bytes, where: str) -> np.ndarray:
    """A 1-D numeric ``.npy`` member without pickle. The headers numpy writes for 1-D little-endian
    integer/float arrays are decoded directly (``np.load`` parses each one with ``ast``, which cost half
    the WebDataset read time); any other header goes through ``np.load(allow_pickle=False)``."""
    if data[:8] == b"\x93NUMPY\x01\x00":
        hlen = int.from_bytes(data[8:10], "little")
        m = _NPY_1D.fullmatch(data[10 : 10 + hlen])
        if m:
            dtype, n = np.dtype(m.group(1).decode()), int(m.group(2))
            if len(data) != 10 + hlen + n * dtype.itemsize:
                raise ShardError(f"{where}: .npy member of {len(data)} bytes does not hold {n} {dtype} values")
            return np.frombuffer(data, dtype=dtype, count=n, offset=10 + hlen)
    try:
        return np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:  # object arrays (pickles) raise ValueError here
        raise ShardError(f"{where}: unreadable .npy member ({exc})") from exc


def _local_range(path: Path, lo: int, hi: int) -> bytes:
    with open(path, "rb") as fh:
        fh.seek(lo)
        return fh.read(hi - lo)


def read_samples(
    tar_path: Path | str,
    idx: np.ndarray,
    start: int,
    stop: int,
    *,
    check: bool = True,
    fetch=None,
    first_cell: int | None = None,
    size: int | None = None,
) -> list[tuple[np.ndarray, np.ndarray, dict]]:
    """Read samples ``start:stop`` with one contiguous byte-range read, checking each sample's crc32.

    ``fetch(lo, hi) -> bytes`` reads the range (a local file by default; remote readers pass theirs).
    With ``first_cell`` every member must be named after its sample's key. With ``size`` (the tar's
    size in the manifest), a read that ends at the last sample also reads and checks the end of the
    archive (zero blocks up to exactly ``size`` bytes): with the per-sample crc32 that covers every
    byte of the file.
    """
    if not 0 <= start <= stop <= len(idx):
        raise ShardError(f"{tar_path}: sample range {start}:{stop} outside 0:{len(idx)}")
    if start == stop:
        return []
    lo = int(idx[start, 0])
    hi = int(idx[stop - 1, 0] + idx[stop - 1, 1])
    tail = size is not None and stop == len(idx)
    end = size if tail else hi
    want = end + 1 if tail else end  # one byte more: a file longer than the manifest says is caught too
    data = fetch(lo, want) if fetch is not None else _local_range(Path(tar_path), lo, want)
    if len(data) != end - lo:
        what = "truncated" if len(data) < end - lo else "longer than the manifest says"
        raise ShardError(f"{tar_path}: {what} (wanted bytes {lo}:{end}); rebuild or re-download it")
    if end > hi and (end - hi < 2 * _BLOCK or data[hi - lo :].count(0) != end - hi):
        raise ShardError(f"{tar_path}: the end of the archive is not zero blocks; the shard is corrupt")
    out = []
    for i in range(start, stop):
        off, length, n_tokens, crc = (int(v) for v in idx[i])
        sample = data[off - lo : off - lo + length]
        where = f"{tar_path} sample {i}"
        if check and zlib.crc32(sample) != crc:
            raise ShardError(f"{tar_path}: sample {i} fails its crc32 check; the shard is corrupt")
        members = _parse_sample(sample, where, None if first_cell is None else sample_key(first_cell + i))
        genes = _npy(members["genes.npy"], where)
        counts = _npy(members["counts.npy"], where)
        if genes.dtype != np.int32 or counts.dtype != np.int32 or len(counts) != len(genes):
            raise ShardError(f"{where}: genes/counts must be int32 arrays of one length, got "
                             f"{genes.dtype}[{len(genes)}] / {counts.dtype}[{len(counts)}]")  # fmt: skip
        if len(genes) != n_tokens:
            raise ShardError(f"{tar_path}: sample {i} has {len(genes)} tokens, index says {n_tokens}")
        try:
            meta = json.loads(members["json"])
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ShardError(f"{where}: unreadable metadata member ({exc})") from exc
        out.append((genes, counts, meta))
    return out
