"""Per-shard label counts (``labels.npz``): what weighted and with-replacement draws plan from.

A weighted epoch needs, before it reads a byte, how much weight each shard holds: with a class weight
``w[g]`` per value of a metadata column, shard ``s`` holds ``sum_g counts[s, g] * w[g]``. Reading every
cell's label from every shard for that (the only way before) costs O(cells) memory and I/O in every
loader process: ~3 GB and minutes at 160M cells, and for WebDataset a read of every tar. So the build
counts each categorical column's values per shard and stores the counts as one sparse matrix per
column, in ``labels.npz`` beside the manifest (hash in ``index.json``'s ``labels`` entry):

- ``<column>.values``: the column's values, sorted (a class's code is its position);
- ``<column>.indptr``: ``n_shards + 1`` offsets into the two arrays below, shard after shard in manifest
  order (every split's shards);
- ``<column>.codes`` / ``<column>.counts``: each shard's values present and how many cells hold them;
- ``<column>.missing``: per shard, the cells without a value.

Which columns: the string, categorical and boolean metadata columns of every shard, except cell
identifiers (``cell_id``, ``obs_name``, ``soma_joinid``, source columns) and columns with more than
``MAX_VALUES`` values in a shard (identifier-like: counting them would cost what it saves).

The sidecar is optional (FORMAT.md: an optional field does not change ``format_version``): a set built
before it streams as before, and a mode that needs it says to rebuild.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from ..errors import ShardError
from ..storage.atomic import sha256_file, write_bytes_atomic

__all__ = [
    "LABELS_NAME",
    "MAX_VALUES",
    "LabelCounts",
    "count_labels",
    "read_label_counts",
    "save_label_counts",
    "write_label_counts",
]

LABELS_NAME = "labels.npz"
MAX_VALUES = 4096  # per shard; more distinct values than this is an identifier, not a class
_BLOCK = 1 << 20  # entries per block of a sum
_ID_COLUMNS = frozenset({"cell_id", "obs_name", "soma_joinid", "source_file", "source_uri"})


def _categorical(t: pa.DataType) -> bool:
    if pa.types.is_dictionary(t):
        t = t.value_type
    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_boolean(t)


def count_labels(table: pa.Table) -> dict[str, dict[str, int]]:
    """One shard's counts: ``{column: {value: cells}}`` for its categorical columns (``None`` key: cells
    without a value). Columns over ``MAX_VALUES`` values are left out."""
    out: dict[str, dict[str, int]] = {}
    for name in table.column_names:
        col = table.column(name)
        if name in _ID_COLUMNS or not _categorical(col.type):
            continue
        counts = col.value_counts()  # a struct array of (values, counts), nulls counted under null
        if len(counts) > MAX_VALUES:
            continue
        values = counts.field("values").to_pylist()
        out[name] = {
            ("\0missing" if v is None else str(v)): int(n)
            for v, n in zip(values, counts.field("counts").to_pylist(), strict=True)
        }
    return out


def write_label_counts(out: Path, per_shard: Sequence[dict[str, dict[str, int]] | None]) -> dict[str, Any] | None:
    """Write ``labels.npz`` for the columns every shard counted; returns the manifest entry (None: no
    column to count)."""
    if not per_shard or any(p is None for p in per_shard):
        return None
    columns = sorted(set.intersection(*(set(p) for p in per_shard)))
    if not columns:
        return None
    table: dict[str, tuple[list[str], np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = {}
    for col in columns:
        values = sorted({v for p in per_shard for v in p[col] if v != "\0missing"})
        code = {v: i for i, v in enumerate(values)}
        indptr, codes, counts, missing = [0], [], [], []
        for p in per_shard:
            hist = p[col]
            missing.append(hist.get("\0missing", 0))
            pairs = sorted((code[v], n) for v, n in hist.items() if v != "\0missing")
            codes += [c for c, _ in pairs]
            counts += [n for _, n in pairs]
            indptr.append(len(codes))
        table[col] = (values, np.asarray(indptr), np.asarray(codes), np.asarray(counts), np.asarray(missing))
    return save_label_counts(out, table)


def save_label_counts(
    out: Path, table: dict[str, tuple[Sequence[str], np.ndarray, np.ndarray, np.ndarray, np.ndarray]]
) -> dict[str, Any]:
    """Write ``labels.npz`` from per-column ``(values, indptr, codes, counts, missing)``; the manifest entry."""
    arrays: dict[str, np.ndarray] = {}
    for col, (values, indptr, codes, counts, missing) in table.items():
        arrays[f"{col}.values"] = np.asarray(values, dtype=np.str_)
        arrays[f"{col}.indptr"] = np.asarray(indptr, dtype=np.int64)
        arrays[f"{col}.codes"] = np.asarray(codes, dtype=_narrow(len(values)))
        arrays[f"{col}.counts"] = np.asarray(counts, dtype=_narrow(int(np.max(counts, initial=0)) + 1))
        arrays[f"{col}.missing"] = np.asarray(missing, dtype=np.int32)
    buf = io.BytesIO()
    np.savez(buf, **arrays)  # uncompressed: a reader loads one column's members only
    path = Path(out) / LABELS_NAME
    write_bytes_atomic(path, buf.getvalue())
    return {"file": LABELS_NAME, "sha256": sha256_file(path), "columns": sorted(table)}


def _narrow(n: int) -> type:
    """The smallest unsigned type for values below ``n`` (the arrays are ~half the sidecar at scale)."""
    return np.uint16 if n <= 1 << 16 else np.uint32


@dataclass(frozen=True)
class LabelCounts:
    """One column's per-shard counts over a reader's shards (a split of a set)."""

    column: str
    values: np.ndarray  # class names, sorted; a code is a position here
    indptr: np.ndarray  # (n_shards + 1,) into codes / counts
    codes: np.ndarray
    counts: np.ndarray
    missing: np.ndarray  # (n_shards,) cells without a value

    @property
    def n_shards(self) -> int:
        return len(self.indptr) - 1

    def _blocks(self):
        """Shard blocks of about ``_BLOCK`` entries: sums over them keep temporaries small."""
        lo = 0
        while lo < self.n_shards:
            hi = int(np.searchsorted(self.indptr, self.indptr[lo] + _BLOCK, side="right")) - 1
            hi = min(max(hi, lo + 1), self.n_shards)
            yield lo, hi, int(self.indptr[lo]), int(self.indptr[hi])
            lo = hi

    def totals(self) -> np.ndarray:
        """Cells of each class."""
        out = np.zeros(len(self.values), dtype=np.int64)
        for _, _, a, b in self._blocks():
            out += np.bincount(self.codes[a:b], weights=self.counts[a:b], minlength=len(self.values)).astype(np.int64)
        return out

    def shard_sums(self, per_class: np.ndarray) -> np.ndarray:
        """``sum_g counts[s, g] * per_class[g]`` for every shard ``s`` (float64)."""
        out = np.zeros(self.n_shards)
        per_class = np.asarray(per_class, dtype=np.float64)
        for lo, hi, a, b in self._blocks():
            cs = np.concatenate([[0.0], np.cumsum(self.counts[a:b] * per_class[self.codes[a:b]])])
            out[lo:hi] = np.diff(cs[self.indptr[lo : hi + 1] - a])
        return out

    def select(self, shards: np.ndarray) -> LabelCounts:
        """The counts of some shards (in that order), e.g. a split's."""
        shards = np.asarray(shards, dtype=np.int64)
        lo, hi = self.indptr[shards], self.indptr[shards + 1]
        sizes = hi - lo
        take = np.repeat(lo - np.concatenate([[0], np.cumsum(sizes)[:-1]]), sizes) + np.arange(int(sizes.sum()))
        indptr = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        return LabelCounts(self.column, self.values, indptr, self.codes[take], self.counts[take], self.missing[shards])


def read_label_counts(data: bytes | Path, column: str, where: str) -> LabelCounts:
    """One column's counts from ``labels.npz`` (its bytes, or its path: then only that column's members
    are read); ``where`` names the set in errors."""
    try:
        with np.load(io.BytesIO(data) if isinstance(data, bytes) else data, allow_pickle=False) as npz:
            if f"{column}.values" not in npz.files:
                raise KeyError(column)
            parts = {k: npz[f"{column}.{k}"] for k in ("values", "indptr", "codes", "counts", "missing")}
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise ShardError(f"{where}/{LABELS_NAME}: unreadable ({exc}); rebuild the shard set") from exc
    except KeyError:
        raise ShardError(f"{where}: {LABELS_NAME} has no counts of {column!r}") from None
    return LabelCounts(column, parts["values"].astype(str), **{k: v for k, v in parts.items() if k != "values"})
