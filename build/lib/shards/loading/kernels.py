"""The collator's fused kernel: ragged cells → padded, masked batch arrays in one compiled pass.

Per cell, in one loop over its tokens and without holding the GIL: truncate to the context, write
``<cls>``, the genes and ``<eos>`` into the padded row, hash every gene position with the counter-based
hash of ``hashing`` (the per-cell part of the chain once, the position's last step per token), select
the ``max(1, round(0.15 n))`` smallest hashes (a histogram select, O(n)), and for each selected position draw
the 80/10/10 replacement; the scGPT value bins (per-cell quantiles with NumPy's linear interpolation,
digitized both ways and split by a seeded hash) in the same pass. Every number is computed exactly as
the vectorized NumPy collator it replaces did (kept as the test oracle,
``tests/shards/collate_reference.py``), so the outputs are bit-identical
— the golden test and ``tests/shards/test_collate_kernel.py`` check it over seeds, epochs, contexts,
bins, panels and padded repeats.

Measured (``python -m benchmarks loader``): the NumPy collator spent ~46% of an epoch here, a partition
over a batch x width matrix of 64-bit keys alone ~13%; see ``docs/BENCHMARKS.md`` for the figures.
"""

from __future__ import annotations

import numpy as np

from ..jit import kernel

__all__ = ["collate_into", "gather_rows", "value_bins_row"]

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_S30, _S27, _S31, _S11, _S56 = np.uint64(30), np.uint64(27), np.uint64(31), np.uint64(11), np.uint64(56)


@kernel(nogil=True, inline="always")
def _mix(x):  # pragma: no cover - compiled
    x = (x ^ (x >> _S30)) * _M1
    x = (x ^ (x >> _S27)) * _M2
    return x ^ (x >> _S31)


@kernel(nogil=True, inline="always")
def _prefix(seed, epoch, cell, stream):  # pragma: no cover - compiled
    """The position-independent part of ``hashing.mask_hash`` for one cell and stream."""
    h = _mix(np.uint64(seed) * _GOLDEN + np.uint64(stream))
    h = _mix(h ^ (np.uint64(epoch) * _GOLDEN))
    return _mix(h ^ cell)


@kernel(nogil=True, inline="always")
def _unit(h):  # pragma: no cover - compiled
    return np.float64(h >> _S11) / 9007199254740992.0  # 2**53


@kernel(nogil=True)
def _kth_smallest(keys, lo, hi, k, hist, cand):  # pragma: no cover - compiled
    """The k-th smallest (1-based) of ``keys[lo:hi]``, exactly: a 256-bucket histogram of the top byte
    finds the bucket that holds it (the keys are uniform 64-bit hashes, so ~n/256 of them), and only
    that bucket is sorted. Two linear passes instead of a quickselect's swapping ones."""
    hist[:] = 0
    for j in range(lo, hi):
        hist[keys[j] >> _S56] += 1
    below = 0
    bucket = 0
    for bucket in range(256):
        if below + hist[bucket] >= k:
            break
        below += hist[bucket]
    m = 0
    top = np.uint64(bucket)
    for j in range(lo, hi):
        if keys[j] >> _S56 == top:
            cand[m] = keys[j]
            m += 1
    part = np.sort(cand[:m])
    return part[k - below - 1]


@kernel(nogil=True)
def _sorted_counts(counts, lo, span):  # pragma: no cover - compiled
    """``np.sort(counts)`` as float64 for counts in ``[lo, lo + span)``, by counting: counts are small
    integers (a cell's range is rarely more than a few thousand), so this is linear and ~5x faster than
    the comparison sort it replaces."""
    hist = np.zeros(span, dtype=np.int64)
    for x in counts:
        hist[np.int64(x) - lo] += 1
    s = np.empty(counts.size, dtype=np.float64)
    k = 0
    for v in range(span):
        for _ in range(hist[v]):
            s[k] = np.float64(v + lo)
            k += 1
    return s


@kernel(nogil=True, inline="always")
def _count_below(edges, x, strict):  # pragma: no cover - compiled
    """How many ``edges`` are < x (``strict``) or <= x: ``np.searchsorted`` left or right, inlined."""
    lo = 0
    hi = edges.size
    while lo < hi:
        mid = (lo + hi) >> 1
        if edges[mid] < x or (not strict and edges[mid] == x):
            lo = mid + 1
        else:
            hi = mid
    return lo


@kernel(nogil=True)
def value_bins_row(counts, n, edges_q, seed, epoch, cell, out):  # pragma: no cover - compiled
    """scGPT bins of one cell into ``out[1 : n + 1]``: its counts' quantiles at ``edges_q`` (NumPy's
    linear method, value for value), ``np.digitize`` left and right, a seeded split of ties.

    A cell's counts span a small integer range, so both the sort (a counting sort) and the digitize (a
    table of both sides for every integer in the range, built in one merge with the edges) are linear;
    a cell whose range is far wider than its length sorts and searches instead."""
    m = counts.size
    lo = counts[0]
    hi = counts[0]
    for x in counts:
        lo = min(lo, x)
        hi = max(hi, x)
    span = np.int64(hi) - np.int64(lo) + 1
    dense = span <= 4 * m + 1024
    s = _sorted_counts(counts, lo, span) if dense else np.sort(counts.astype(np.float64))
    nq = edges_q.size
    edges = np.empty(nq, dtype=np.float64)
    for j in range(nq):
        v = (m - 1) * edges_q[j]
        if v >= m - 1:
            edges[j] = s[m - 1]
        elif v < 0:
            edges[j] = s[0]
        else:
            p = np.floor(v)
            a, b = s[np.int64(p)], s[np.int64(p) + 1]
            t = v - p
            d = b - a
            edges[j] = b - d * (1.0 - t) if t >= 0.5 else a + d * t
    h = _prefix(seed, epoch, cell, 3)
    if dense:
        lefts = np.empty(span, dtype=np.int64)  # edges <= x, for x = lo + v
        rights = np.empty(span, dtype=np.int64)  # edges < x
        le = 0
        lt = 0
        for v in range(span):
            x = np.float64(v + lo)
            while lt < nq and edges[lt] < x:
                lt += 1
            le = max(le, lt)
            while le < nq and edges[le] <= x:
                le += 1
            lefts[v] = le
            rights[v] = lt
        for i in range(n):
            v = np.int64(counts[i]) - lo
            u = _unit(_mix(h ^ (np.uint64(i + 1) * _GOLDEN)))
            out[i + 1] = np.int64(np.ceil(u * (rights[v] - lefts[v]) + lefts[v]))
        return
    for i in range(n):
        x = np.float64(counts[i])
        left = _count_below(edges, x, False)
        right = _count_below(edges, x, True)
        u = _unit(_mix(h ^ (np.uint64(i + 1) * _GOLDEN)))
        out[i + 1] = np.int64(np.ceil(u * (right - left) + left))


@kernel(nogil=True)
def collate_into(
    genes,
    counts,
    offsets,
    cells,
    pads,
    seed,
    epoch,
    context,
    mask_prob,
    special,
    gene_ids,
    masking,
    edges_q,
    ids,
    attention,
    labels,
    weight,
    values,
):  # pragma: no cover - compiled
    """Fill the batch arrays (``ids``, ``attention``, ``labels``: (b, width); ``weight``: (b,);
    ``values``: (b, width) or empty) from ragged ``genes``/``counts`` at ``offsets``. ``cells`` are the
    (salted) cell hashes, ``special`` the ids of ``<pad> <mask> <cls> <eos>``."""
    pad_id, mask_id, cls_id, eos_id = special[0], special[1], special[2], special[3]
    b, width = ids.shape
    n_genes = gene_ids.size
    keys = np.empty(width, dtype=np.uint64)
    cand = np.empty(width, dtype=np.uint64)
    hist = np.zeros(256, dtype=np.int64)
    for r in range(b):
        a0 = offsets[r]
        n = min(offsets[r + 1] - a0, context - 2)
        row = ids[r]
        row[0] = cls_id
        for j in range(n):
            row[1 + j] = genes[a0 + j]
        row[n + 1] = eos_id
        for j in range(n + 2, width):
            row[j] = pad_id
        for j in range(width):
            attention[r, j] = j < n + 2
            labels[r, j] = -100
        weight[r] = np.float32(0.0) if pads[r] else np.float32(1.0)
        if values.size:
            for j in range(width):
                values[r, j] = 0
            if n:
                value_bins_row(counts[a0 : offsets[r + 1]], n, edges_q, seed, epoch, cells[r], values[r])
        if not masking:
            continue
        if n == 0:  # no gene to mask (an empty cell: a panel left it nothing, or a skipped shard's)
            continue
        k = max(1, np.int64(np.floor(mask_prob * n + 0.5)))  # <= n: the threshold is a gene's key
        h0 = _prefix(seed, epoch, cells[r], 0)
        for j in range(1, n + 1):
            keys[j] = _mix(h0 ^ (np.uint64(j) * _GOLDEN))
        threshold = _kth_smallest(keys, 1, n + 1, k, hist, cand)
        h1 = _prefix(seed, epoch, cells[r], 1)
        h2 = _prefix(seed, epoch, cells[r], 2)
        for j in range(1, n + 1):
            if keys[j] <= threshold:
                token = row[j]
                labels[r, j] = token
                pos = np.uint64(j) * _GOLDEN
                v = _unit(_mix(h1 ^ pos))
                if v < 0.8:
                    row[j] = mask_id
                elif v < 0.9:
                    draw = _unit(_mix(h2 ^ pos))
                    row[j] = gene_ids[np.int64(draw * n_genes)]


@kernel(nogil=True)
def gather_rows(tokens, starts, lengths, out):  # pragma: no cover - compiled
    """Copy cell ``i``'s ``lengths[i]`` tokens at ``starts[i]`` of every channel of ``tokens`` (c, T)
    to the next place in ``out`` (c, sum(lengths)): a block copy per cell, where NumPy's fancy index
    builds and follows an int64 index per token (~25% of an epoch here, before this)."""
    at = 0
    for i in range(starts.size):
        a = starts[i]
        n = lengths[i]
        for ch in range(tokens.shape[0]):
            out[ch, at : at + n] = tokens[ch, a : a + n]
        at += n
