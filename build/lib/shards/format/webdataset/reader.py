"""Reading WebDataset shards: the sample index, byte ranges of samples, and a per-shard reader.

A range of cells is one contiguous byte-range read through the sample index, each sample checked by its
crc32; members are parsed without pickle (``.npy`` headers decoded directly, int32 only) and must be
plain files named after their sample. Metadata lives in each sample's JSON member, so a metadata column
needs the whole shard read (once per process).

``read_run`` is the loader's path (one compiled pass, ``fast.py``); ``read_samples`` the Python reader
it falls back to and the one metadata reads use. Both live here (the module runs past 300 lines) so
that the fallback and its error messages stay next to the path that relies on them.

Long because it is the format's whole read side in one place: the sample index, the compiled run parser with
its slow, naming fallback, and the per-shard reader that joins them; each part is short."""

from __future__ import annotations

import io
import json
import re
import tarfile
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from ...errors import ShardError
from ..access import ShardAccess
from ..records import CellRun
from . import fast
from .names import BLOCK, EXTENSIONS, IDX_COLUMNS, idx_name, sample_key

__all__ = ["WebDatasetShardReader", "count_cells", "read_idx", "read_run", "read_samples"]

#: a run of fewer samples is parsed in the calling thread (a thread hand-over costs ~20-50 us)
_PARALLEL_SAMPLES = 32


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


def count_cells(directory: Path, index: int) -> int:
    """Cells of shard ``index`` as its sample index says (for ``ingest verify``)."""
    return len(read_idx(directory / idx_name(index)))


def _read_header(block: bytes, where: str) -> tuple[str, int, bool]:
    """``(name, size, is_regular_file)`` of a tar header; plain ustar file headers are parsed directly
    (the hot path: three per cell).

    Anything else (GNU/pax extensions, base-256 sizes, links, another writer's quirks) goes through
    ``tarfile``, which also raises on a malformed block."""
    if (
        len(block) == BLOCK
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
        name, size, regular = _read_header(buf[pos : pos + BLOCK], where)
        if name.startswith("/") or ".." in name.split("/"):
            raise ShardError(f"{where}: refusing tar member with unsafe name {name!r}")
        if not regular:
            raise ShardError(f"{where}: refusing tar member {name!r}: not a regular file")
        stem, _, ext = name.partition(".")
        if key is not None and stem != key:
            raise ShardError(f"{where}: member {name!r} does not belong to sample {key}")
        if ext not in EXTENSIONS or ext in members:
            raise ShardError(f"{where}: unexpected or repeated member {name!r} (expected genes.npy, counts.npy, json)")
        start = pos + BLOCK
        if start + size > len(buf):
            raise ShardError(f"{where}: member {name!r} runs past the end of its sample")
        members[ext] = buf[start : start + size]
        pos = start + size + (-size % BLOCK)
    missing = [e for e in EXTENSIONS if e not in members]
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


def _run_bytes(tar_path, idx: np.ndarray, start: int, stop: int, fetch, size: int | None) -> tuple[bytes, int]:
    """The bytes of samples ``start:stop`` (``start < stop``) in one read, and where they start; with
    ``size``, a run that ends at the last sample also has the end of the archive checked."""
    lo = int(idx[start, 0])
    hi = int(idx[stop - 1, 0] + idx[stop - 1, 1])
    tail = size is not None and stop == len(idx)
    end = size if tail else hi
    want = end + 1 if tail else end  # one byte more: a file longer than the manifest says is caught too
    data = fetch(lo, want) if fetch is not None else _local_range(Path(tar_path), lo, want)
    if len(data) != end - lo:
        what = "truncated" if len(data) < end - lo else "longer than the manifest says"
        raise ShardError(f"{tar_path}: {what} (wanted bytes {lo}:{end}); rebuild or re-download it")
    if end > hi and (end - hi < 2 * BLOCK or data[hi - lo :].count(0) != end - hi):
        raise ShardError(f"{tar_path}: the end of the archive is not zero blocks; the shard is corrupt")
    return data, lo


def read_run(
    tar_path: Path | str,
    idx: np.ndarray,
    start: int,
    stop: int,
    *,
    first_cell: int,
    fetch=None,
    size: int | None = None,
) -> CellRun:
    """``(genes, counts, offsets, cell_ids)`` of samples ``start:stop``: one read, parsed in one compiled
    pass (``fast.parse_run``); a run with a sample the fast path does not take is read by
    ``read_samples``, which accepts any valid sample and names what is wrong with an invalid one."""
    if not 0 <= start <= stop <= len(idx):
        raise ShardError(f"{tar_path}: sample range {start}:{stop} outside 0:{len(idx)}")
    n = stop - start
    rows = idx[start:stop]
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(rows[:, 2], out=offsets[1:])
    if n == 0:
        return CellRun(np.zeros(0, np.int32), np.zeros(0, np.int32), offsets, np.zeros(0, dtype=object))
    if first_cell + stop < 10**12:
        data, lo = _run_bytes(tar_path, idx, start, stop, fetch, size)
        raw = np.frombuffer(data, dtype=np.uint8)
        genes = np.empty(int(offsets[-1]), dtype=np.int32)
        counts = np.empty_like(genes)
        id_lo, id_hi = np.zeros(n, np.int64), np.zeros(n, np.int64)
        keys = fast.sample_keys(first_cell + start, n)
        rel = rows[:, 0] - lo
        view = memoryview(data)
        # every sample's crc32 first (zlib's runs at ~2x a compiled slice-by-8 here: one call per sample
        # is all that Python does per cell), then the compiled pass
        crcs = np.fromiter(
            (zlib.crc32(view[a : a + b]) for a, b in zip(rel.tolist(), rows[:, 1].tolist(), strict=True)), np.int64, n
        )
        if raw.ctypes.data % 4:  # a buffer at an odd address: copy it once so that values copy as blocks
            raw = raw.copy()
        if (crcs == rows[:, 3]).all() and fast.parse_run(
            raw, rel, rows[:, 1], rows[:, 2], keys, genes, counts, id_lo, id_hi
        ) < 0:
            id_offsets = np.zeros(n + 1, dtype=np.int64)
            np.cumsum(id_hi - id_lo, out=id_offsets[1:])
            text = np.empty(int(id_offsets[-1]), dtype=np.uint8)
            fast.gather_bytes(raw, id_lo, id_hi, text)
            ids = pa.LargeStringArray.from_buffers(n, pa.py_buffer(id_offsets), pa.py_buffer(text))
            try:
                ids.validate(full=True)  # UTF-8, as the JSON parser would insist
                return CellRun(genes, counts, offsets, ids.to_numpy(zero_copy_only=False))
            except pa.ArrowInvalid:
                pass
    samples = read_samples(tar_path, idx, start, stop, fetch=fetch, first_cell=first_cell, size=size)
    genes = np.concatenate([g for g, _, _ in samples]).astype(np.int32)
    counts = np.concatenate([c for _, c, _ in samples]).astype(np.int32)
    return CellRun(genes, counts, offsets, np.array([m["cell_id"] for _, _, m in samples], dtype=object))


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
    data, lo = _run_bytes(tar_path, idx, start, stop, fetch, size)
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
            raise ShardError(
                f"{where}: genes/counts must be int32 arrays of one length, got "
                f"{genes.dtype}[{len(genes)}] / {counts.dtype}[{len(counts)}]"
            )
        if len(genes) != n_tokens:
            raise ShardError(f"{tar_path}: sample {i} has {len(genes)} tokens, index says {n_tokens}")
        try:
            meta = json.loads(members["json"])
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ShardError(f"{where}: unreadable metadata member ({exc})") from exc
        out.append((genes, counts, meta))
    return out


class WebDatasetShardReader:
    """One WebDataset shard, as the loader reads it: its sample index (read once, checked against the
    manifest), cell ranges and metadata columns (from the samples' JSON members)."""

    def __init__(self, shard: dict) -> None:
        self.shard = shard
        self._idx: np.ndarray | None = None

    def index(self, access: ShardAccess) -> np.ndarray:
        if self._idx is None:
            rel = self.shard["files"][0]["path"]
            idx = read_idx(access.where(rel), access.sidecar())
            if len(idx) != self.shard["n_cells"]:
                raise ShardError(f"{rel}: {len(idx)} samples indexed, manifest says {self.shard['n_cells']}")
            self._idx = idx
        return self._idx

    def cell_tokens(self, access: ShardAccess) -> np.ndarray:
        return self.index(access)[:, 2].astype(np.int32)

    def samples(self, access: ShardAccess, start: int, stop: int) -> list[tuple[np.ndarray, np.ndarray, dict]]:
        rel = self.shard["path"]
        idx = self.index(access)
        local = access.local is not None
        return read_samples(
            Path(access.location(rel)) if local else access.where(rel, remote=True),
            idx,
            start,
            stop,
            fetch=None if local else (lambda lo, hi: access.fetch(rel, lo, hi)),
            first_cell=self.shard["first_cell"],
            size=self.shard["bytes"],
        )

    def read(self, access: ShardAccess, start: int, stop: int) -> CellRun:
        rel = self.shard["path"]
        idx = self.index(access)
        local = access.local is not None

        def part(a: int, b: int) -> CellRun:
            return read_run(
                Path(access.location(rel)) if local else access.where(rel, remote=True),
                idx,
                a,
                b,
                fetch=None if local else (lambda lo, hi: access.fetch(rel, lo, hi)),
                first_cell=self.shard["first_cell"],
                size=self.shard["bytes"],
            )

        if access.executor is None or stop - start < _PARALLEL_SAMPLES:
            return part(start, stop)
        mid = (start + stop) // 2  # samples are independent: two halves, two threads, one result
        pending = access.executor.submit(part, mid, stop)
        first, second = part(start, mid), pending.result()
        offsets = np.concatenate([first.offsets, second.offsets[1:] + first.offsets[-1]])
        return CellRun(
            np.concatenate([first.genes, second.genes]),
            np.concatenate([first.counts, second.counts]),
            offsets,
            np.concatenate([first.ids, second.ids]),
        )

    def _rows(self, access: ShardAccess) -> list[dict]:
        return [m for _, _, m in self.samples(access, 0, int(self.shard["n_cells"]))]

    def metadata(self, access: ShardAccess) -> pd.DataFrame:
        return pd.DataFrame(self._rows(access))

    def column(self, access: ShardAccess, name: str) -> np.ndarray:
        """One metadata column. WebDataset keeps metadata in each sample's JSON, so the shard is read
        whole (prefer Zarr for metadata-weighted sampling of large sets)."""
        rows = self._rows(access)
        if rows and name not in rows[0]:
            raise ShardError(f"{self.shard['path']}: no metadata column {name!r} (columns: {sorted(rows[0])})")
        return np.array([m.get(name) for m in rows], dtype=object)
