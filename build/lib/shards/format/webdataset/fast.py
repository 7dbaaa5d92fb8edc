"""A run of WebDataset samples parsed in one compiled pass: each sample's three tar headers,
its two ``.npy`` headers and the ``cell_id`` of its JSON member, and the gene/count values copied into
one flat block, without a Python step per cell.

Why by hand: per cell, the Python reader parsed three tar headers, two ``.npy`` headers and a JSON
document and made a dozen small arrays (~75 µs a cell, 3x the Zarr reader's cost; profile in
``benchmarks/results/2026-12-03-hot-paths``). No library parses tar members from a byte range without
a Python object per member.

The fast path accepts exactly what the writer produces (ustar headers with octal fields, members named
``<key>.genes.npy``, ``.counts.npy``, ``.json`` in that order, 1-d little-endian int32 ``.npy`` headers
of the indexed token count, a ``"cell_id":"..."`` pair without escapes). The first sample that is
anything else sends the whole run to the Python reader, which accepts every valid sample and names
what is wrong with an invalid one, so errors and results are the same as before.
"""

from __future__ import annotations

import numpy as np

from ...jit import kernel

__all__ = ["gather_bytes", "parse_run", "sample_keys"]

_NPY_PREFIX = np.frombuffer(b"\x93NUMPY\x01\x00", dtype=np.uint8)
_DESCR = np.frombuffer(b"{'descr': '<i4', 'fortran_order': False, 'shape': (", dtype=np.uint8)
_DESCR_END = np.frombuffer(b",), }", dtype=np.uint8)
_CELL_ID = np.frombuffer(b'"cell_id":"', dtype=np.uint8)
_USTAR = np.frombuffer(b"ustar", dtype=np.uint8)
_EXTS = (b".genes.npy", b".counts.npy", b".json")
_EXT_BYTES = np.zeros((3, 16), dtype=np.uint8)
_EXT_LENS = np.array([len(e) for e in _EXTS], dtype=np.int64)
for _i, _e in enumerate(_EXTS):
    _EXT_BYTES[_i, : len(_e)] = np.frombuffer(_e, dtype=np.uint8)


@kernel(nogil=True)
def _octal(block, lo, hi):  # pragma: no cover - compiled
    """An octal tar field: spaces, digits, then NULs or spaces only; -1 for anything else."""
    i = lo
    while i < hi and block[i] == 32:
        i += 1
    v = np.int64(0)
    digits = 0
    while i < hi and 48 <= block[i] <= 55:
        v = v * 8 + (block[i] - 48)
        digits += 1
        i += 1
    while i < hi:
        if block[i] != 0 and block[i] != 32:
            return -1
        i += 1
    return v if digits else -1


@kernel(nogil=True)
def _member(data, pos, end, key, ext):  # pragma: no cover - compiled
    """(data start, size) of the ustar member at ``pos`` named ``key + ext``, or (-1, 0)."""
    if pos + 512 > end:
        return -1, 0
    b = data[pos : pos + 512]
    for j in range(5):
        if b[257 + j] != _USTAR[j]:
            return -1, 0
    if not (b[156] == 48 or b[156] == 0) or b[124] & 0x80 or b[345] != 0:
        return -1, 0
    total = np.int64(8 * 32)
    for j in range(148):
        total += b[j]
    for j in range(156, 512):
        total += b[j]
    if _octal(b, 148, 156) != total:
        return -1, 0
    size = _octal(b, 124, 136)
    if size < 0:
        return -1, 0
    n_key = key.size
    n_ext = _EXT_LENS[ext]
    for j in range(n_key):
        if b[j] != key[j]:
            return -1, 0
    for j in range(n_ext):
        if b[n_key + j] != _EXT_BYTES[ext, j]:
            return -1, 0
    if b[n_key + n_ext] != 0:
        return -1, 0
    start = pos + 512
    if start + size > end:
        return -1, 0
    return start, size


@kernel(nogil=True)
def _npy_values(data, start, size, n):  # pragma: no cover - compiled
    """Where the ``n`` int32 values of a writer's 1-d ``.npy`` member start, or -1."""
    if size < 10:
        return -1
    for j in range(8):
        if data[start + j] != _NPY_PREFIX[j]:
            return -1
    hlen = np.int64(data[start + 8]) | (np.int64(data[start + 9]) << 8)
    h = start + 10
    if 10 + hlen + 4 * n != size or hlen < _DESCR.size + _DESCR_END.size + 2:
        return -1
    for j in range(_DESCR.size):
        if data[h + j] != _DESCR[j]:
            return -1
    i = h + _DESCR.size
    v = np.int64(0)
    digits = 0
    while 48 <= data[i] <= 57 and digits < 19:
        v = v * 10 + (data[i] - 48)
        digits += 1
        i += 1
    if digits == 0 or v != n:
        return -1
    for j in range(_DESCR_END.size):
        if data[i + j] != _DESCR_END[j]:
            return -1
    i += _DESCR_END.size
    last = h + hlen - 1
    while i < last and data[i] == 32:
        i += 1
    if i != last or data[last] != 10:
        return -1
    return h + hlen


@kernel(nogil=True)
def _copy_int32(data, at, n, out, o):  # pragma: no cover - compiled
    """``n`` little-endian int32 values at byte ``at`` of ``data`` into ``out[o:]``: a block copy when
    they are 4-byte aligned (the writer's always are: 512-byte tar blocks, 64-byte ``.npy`` headers,
    and the caller passes an aligned buffer), assembled byte by byte when not."""
    if at % 4 == 0:
        out[o : o + n] = data[at : at + 4 * n].view(np.int32)
        return
    for j in range(n):
        p = at + 4 * j
        out[o + j] = np.int32(
            np.uint32(data[p])
            | (np.uint32(data[p + 1]) << np.uint32(8))
            | (np.uint32(data[p + 2]) << np.uint32(16))
            | (np.uint32(data[p + 3]) << np.uint32(24))
        )


@kernel(nogil=True)
def parse_run(data, rel, lengths, n_tokens, keys, genes, counts, id_lo, id_hi):  # pragma: no cover - compiled
    """Samples (their crc32 checked by the caller) at ``rel`` (offsets into ``data``) of ``lengths``
    bytes: values into ``genes``/``counts``
    (at the cumulative ``n_tokens``), the cell id's byte range into ``id_lo``/``id_hi``. Returns -1, or
    the first sample the fast path does not take (the caller then reads the run the slow way)."""
    o = 0
    for i in range(rel.size):
        s = rel[i]
        end = s + lengths[i]
        key = keys[i]
        n = n_tokens[i]
        g0, gsize = _member(data, s, end, key, 0)
        if g0 < 0:
            return i
        pos = g0 + gsize + (-gsize % 512)
        c0, csize = _member(data, pos, end, key, 1)
        if c0 < 0:
            return i
        pos = c0 + csize + (-csize % 512)
        j0, jsize = _member(data, pos, end, key, 2)
        if j0 < 0:
            return i
        if j0 + jsize + (-jsize % 512) != end:
            return i
        ga = _npy_values(data, g0, gsize, n)
        ca = _npy_values(data, c0, csize, n)
        if ga < 0 or ca < 0:
            return i
        found = -1
        m = _CELL_ID.size
        for p in range(j0, j0 + jsize - m + 1):
            hit = True
            for q in range(m):
                if data[p + q] != _CELL_ID[q]:
                    hit = False
                    break
            if hit:
                found = p + m
                break
        if found < 0:
            return i
        q = found
        while q < j0 + jsize and data[q] != 34:  # the closing quote
            if data[q] == 92:  # an escape: the JSON parser reads this one
                return i
            q += 1
        if q == j0 + jsize:
            return i
        id_lo[i] = found
        id_hi[i] = q
        _copy_int32(data, ga, n, genes, o)
        _copy_int32(data, ca, n, counts, o)
        o += n
    return -1


@kernel(nogil=True)
def gather_bytes(data, lo, hi, out):  # pragma: no cover - compiled
    """``data[lo[i]:hi[i]]`` for every i, back to back into ``out``."""
    o = 0
    for i in range(lo.size):
        for p in range(lo[i], hi[i]):
            out[o] = data[p]
            o += 1


def sample_keys(first: int, n: int) -> np.ndarray:
    """``sample_key(first + i)`` (``c%012d``) of n samples as an (n, 13) byte matrix, vectorized."""
    cells = np.arange(first, first + n, dtype=np.int64)
    out = np.empty((n, 13), dtype=np.uint8)
    out[:, 0] = ord("c")
    for j in range(12):
        out[:, 1 + j] = 48 + (cells // 10 ** (11 - j)) % 10
    return out
