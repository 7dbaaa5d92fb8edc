"""The three passes of a build, as functions of picklable task descriptions.

Each runs in the main process (``--workers 1``) or in a spawned worker that opens its input itself
(HDF5 handles, like TileDB's, must not cross a fork). Each writes its result under a temporary name
and renames it: a finished unit or shard is never half-written, and a rerun reuses it.

Long because it holds the three passes' worker functions with their job dataclasses, which must be importable
by spawned workers from one module."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import scipy.sparse as sp

from shards.format.labels import count_labels
from shards.format.records import METADATA_COLUMNS, CellBlock
from shards.format.registry import get_format
from shards.storage.atomic import atomic_file, path_bytes, sha256_file, sha256_path, tree_digest, write_bytes_atomic
from shards.storage.faults import fault_point
from shards.tokens import TokenMap, rank_value_encode, rows_with_tokens

from ..medians import Histograms
from ..permute import FeistelPermutation
from ..ragged import take_ragged
from ..split import SPLIT_NAMES, assign_split

__all__ = [
    "GENES_PER_CELL_EDGES",
    "SKIP_REASONS",
    "FileTask",
    "Pass1Job",
    "Pass2Job",
    "ShardJob",
    "finalize_shard",
    "pass1_unit",
    "pass2_unit",
    "split_keys",
]

#: status codes of pass 1, per source row
KEPT, ZERO_COUNTS, NO_GENES = 0, 1, 2
SKIP_REASONS = {ZERO_COUNTS: "zero_counts", NO_GENES: "no_genes_in_vocabulary"}
GENES_PER_CELL_EDGES = (0, 100, 200, 300, 500, 1000, 1500, 2000, 3000, 4000, 6000, 8000, 12000)


@dataclass(frozen=True)
class FileTask:
    """What a worker needs to process rows of one input file."""

    spec: Any  # H5adSpec | SomaSpec: opened in the process that runs the task
    label: str  # file path or URI, for messages
    col_token: np.ndarray  # token id per column, -1 when the gene has none
    col_hrow: np.ndarray  # histogram row (position in the vocabulary's genes) per column, or -1
    gene_ids: np.ndarray
    obs_columns: tuple[str, ...]
    split_by: str
    seed: int
    val_fraction: float


def split_keys(src, task: FileTask, a: int, b: int) -> np.ndarray:
    if task.split_by == "cell":
        return src.obs_frame(a, b, [])["cell_id"].to_numpy()
    frame = src.obs_frame(a, b, [task.split_by])
    if task.split_by not in frame.columns:  # dataset_id defaults to the file or experiment, as the metadata does
        return np.full(b - a, src.default_dataset_id, dtype=object)
    return frame[task.split_by].astype(str).to_numpy()


@dataclass(frozen=True)
class Pass1Job:
    """One unit's first pass (a worker process gets it pickled)."""

    task: FileTask
    unit: Any  # layout.Unit: rows start:stop of input file ``file``
    block_cells: int
    token_median: dict[int, float] | None  # given medians (None: this pass histograms the values)
    out: str  # the unit's pass-1 file (.npz)


def pass1_unit(job: Pass1Job) -> dict:
    """Histograms of normalized values, the keep/skip status and the split of every row of a unit."""
    task, unit, block_cells, token_median, out = job.task, job.unit, job.block_cells, job.token_median, job.out
    src = task.spec.open()
    try:
        eligible = task.col_token >= 0
        if token_median is not None:
            eligible &= np.isin(task.col_token, np.fromiter(token_median, dtype=np.int64))
        n_rows = int(task.col_hrow.max()) + 1 if task.col_hrow.size else 0
        hist = Histograms(max(n_rows, 1)) if token_median is None else None
        status, split = [], []
        for a, b, csr in src.iter_blocks(unit.start, unit.stop, block_cells, task.gene_ids):
            n_counts = np.asarray(csr.sum(axis=1)).ravel()
            has = rows_with_tokens(csr, eligible)
            st = np.where(n_counts <= 0, ZERO_COUNTS, np.where(has, KEPT, NO_GENES)).astype(np.uint8)
            status.append(st)
            split.append(assign_split(split_keys(src, task, a, b), task.seed, task.val_fraction))
            if hist is not None:
                hist.add(csr, task.col_hrow, n_counts, np.flatnonzero(st == KEPT))
            fault_point("pass1-block")
        coo = hist.to_coo() if hist is not None else sp.coo_matrix((1, 1), dtype=np.int64)
        status_a, split_a = np.concatenate(status), np.concatenate(split)
        with atomic_file(Path(out)) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, rows=coo.row, cols=coo.col, vals=coo.data.astype(np.int64), status=status_a, split=split_a)
    finally:
        src.close()
    return summarize_pass1(out)


def summarize_pass1(path: str) -> dict:
    with np.load(path, allow_pickle=False) as z:
        status, split = z["status"], z["split"]
    kept = status == KEPT
    return {
        "rows": len(status),
        "kept": {s: int(np.sum(kept & (split == i))) for i, s in enumerate(SPLIT_NAMES)},
        "skipped": {name: int(np.sum(status == code)) for code, name in SKIP_REASONS.items()},
    }


@dataclass(frozen=True)
class Placement:
    """Where a unit's kept cells go: per split, the unit's offset, the split size and its shard bounds."""

    offsets: dict[str, int]
    split_cells: dict[str, int]
    bounds: dict[str, np.ndarray]
    first_cell: dict[str, int]
    first_shard: dict[str, int]
    seed: int


def _string_column(series: pd.Series | None, n: int) -> pa.Array:
    if series is None:
        return pa.nulls(n, type=pa.string())
    return pa.array(series.astype("string").to_numpy(dtype=object, na_value=None), type=pa.string())


def _metadata(src, task: FileTask, a: int, b: int, keep: np.ndarray, n_counts, n_genes) -> pa.Table:
    """The metadata columns of the kept rows ``a + keep`` (same columns and types for every source)."""
    obs = src.obs_frame(a, b, [*METADATA_COLUMNS[1:7], *task.obs_columns]).iloc[keep]
    obs = obs.reset_index(drop=True)
    n = len(keep)
    cols: dict[str, pa.Array] = {"cell_id": pa.array(obs["cell_id"].to_numpy(dtype=object), pa.string())}
    for name in METADATA_COLUMNS[1:7]:
        series = obs[name] if name in obs.columns else None
        if name == "dataset_id" and series is None:
            series = pd.Series([src.default_dataset_id] * n)
        cols[name] = _string_column(series, n)
    cols["n_counts"] = pa.array(n_counts.astype(np.int64))
    cols["n_genes"] = pa.array(n_genes.astype(np.int32))
    for name in task.obs_columns:
        if name not in cols:
            cols[name] = _string_column(obs[name], n)
    return pa.table(cols)


@dataclass(frozen=True)
class Pass2Job:
    """One unit's second pass."""

    task: FileTask
    unit: Any
    block_cells: int
    token_median: dict[int, float]
    pass1: str  # the unit's pass-1 file: which rows are kept, and their split
    place: Placement  # where each kept row goes (shard, position)
    out: str  # the unit's bucket file (.arrow)


def pass2_unit(job: Pass2Job) -> dict:
    """Tokenize a unit's kept cells and write them, grouped by destination shard, to an Arrow file."""
    task, unit, block_cells, token_median = job.task, job.unit, job.block_cells, job.token_median
    pass1, place, out = job.pass1, job.place, job.out
    with np.load(pass1, allow_pickle=False) as z:
        status, split = z["status"], z["split"]
    tmap = TokenMap(task.col_token, token_median)
    perms = {s: FeistelPermutation(n, place.seed, s) for s, n in place.split_cells.items() if n}
    seen = dict(place.offsets)
    src = task.spec.open()
    batch_map: list[tuple[int, int]] = []
    try:
        with atomic_file(Path(out)) as tmp:
            writer = None
            for a, b, csr in src.iter_blocks(unit.start, unit.stop, block_cells, task.gene_ids, validate=False):
                st, sp_ = status[a - unit.start : b - unit.start], split[a - unit.start : b - unit.start]
                keep = np.flatnonzero(st == KEPT)  # (counts were checked in pass 1)
                if keep.size == 0:
                    continue
                n_counts = np.asarray(csr.sum(axis=1)).ravel()[keep]
                genes, counts, offsets = rank_value_encode(csr if keep.size == len(st) else csr[keep], tmap)
                lengths = np.diff(offsets)
                cell_index = np.empty(keep.size, dtype=np.int64)
                shard = np.empty(keep.size, dtype=np.int64)
                for i, name in enumerate(SPLIT_NAMES):
                    sel = sp_[keep] == i
                    k = seen[name] + np.arange(int(sel.sum()))
                    seen[name] += int(sel.sum())
                    if not sel.any():
                        continue
                    pos = perms[name](k)
                    local = np.searchsorted(place.bounds[name], pos, side="right") - 1
                    shard[sel] = place.first_shard[name] + local
                    cell_index[sel] = place.first_cell[name] + pos
                meta = _metadata(src, task, a, b, keep, n_counts, lengths)
                order = np.argsort(cell_index, kind="stable")  # shard order, then cell order
                (genes, counts), offsets = take_ragged([genes, counts], offsets, order)
                list_offsets = pa.array(offsets.astype(np.int32))
                table = (
                    meta.take(pa.array(order))
                    .add_column(0, "cell_index", pa.array(cell_index[order]))
                    .append_column("genes", pa.ListArray.from_arrays(list_offsets, pa.array(genes)))
                    .append_column("counts", pa.ListArray.from_arrays(list_offsets, pa.array(counts)))
                )
                sh = shard[order]
                cuts = np.flatnonzero(np.diff(sh)) + 1
                if writer is None:
                    writer = pa.ipc.new_file(str(tmp), table.schema)
                for lo, hi in zip(np.r_[0, cuts], np.r_[cuts, len(sh)], strict=True):
                    writer.write_batch(table.slice(lo, hi - lo).combine_chunks().to_batches()[0])
                    batch_map.append((int(sh[lo]), len(batch_map)))
                    fault_point("bucket")
            if writer is None:
                writer = pa.ipc.new_file(str(tmp), pa.schema([("cell_index", pa.int64())]))
            writer.close()
            write_bytes_atomic(Path(out + ".map.json"), json.dumps(batch_map).encode())
    finally:
        src.close()
    return {"cells": int(sum(v - place.offsets[k] for k, v in seen.items()))}


@dataclass(frozen=True)
class ShardJob:
    """One shard to gather and write."""

    shard: int
    split: str
    first_cell: int
    n_cells: int
    sources: list[tuple[str, list[int]]]  # (a unit's bucket file, its record batches for this shard)
    fmt: str
    out_dir: str
    done: str  # the record written when the shard is finished (``done/shard-*.json``)


def finalize_shard(job: ShardJob) -> dict:
    """Gather a shard's cells from every unit file, order them by cell index, write the shard."""
    shard, split, first_cell, n_cells, sources = job.shard, job.split, job.first_cell, job.n_cells, job.sources
    fmt, out_dir, done = job.fmt, job.out_dir, job.done
    tables = []
    for path, batches in sources:
        with pa.memory_map(path) as mm:
            reader = pa.ipc.open_file(mm)
            tables += [pa.Table.from_batches([reader.get_batch(i)]) for i in batches]
    table = pa.concat_tables(tables).combine_chunks()
    order = np.argsort(table["cell_index"].to_numpy(), kind="stable")
    idx = table["cell_index"].to_numpy()[order]
    expected = np.arange(first_cell, first_cell + n_cells)
    if len(idx) != n_cells or not np.array_equal(idx, expected):
        raise RuntimeError(f"shard {shard}: gathered cells {idx[:3]}... do not match its layout")  # an invariant
    genes_col, counts_col = table["genes"].chunk(0), table["counts"].chunk(0)
    offsets = genes_col.offsets.to_numpy().astype(np.int64)
    flat = [col.values.to_numpy()[offsets[0] : offsets[-1]] for col in (genes_col, counts_col)]
    (genes, counts), offsets = take_ragged(flat, offsets - offsets[0], order)
    table = table.drop_columns(["cell_index", "genes", "counts"]).take(pa.array(order))
    block = CellBlock(genes.astype(np.int32, copy=False), counts.astype(np.int32, copy=False), offsets, table)
    out = Path(out_dir)
    shard_format = get_format(fmt)
    paths = shard_format.write(out, shard, first_cell, block)
    main, *rest = paths
    lengths = block.lengths
    datasets = pd.Series(table["dataset_id"].to_numpy(zero_copy_only=False)).value_counts(dropna=False)
    info = {
        "path": main.name,
        "split": split,
        "n_cells": len(block),
        "n_tokens": block.n_tokens,
        "first_cell": first_cell,
        "sha256": sha256_path(main),
        "bytes": path_bytes(main),
        "files": [{"path": p.name, "sha256": sha256_file(p), "bytes": p.stat().st_size} for p in rest],
        "members": sorted(q.relative_to(main).as_posix() for q in main.rglob("*") if q.is_file())
        if main.is_dir()
        else [],
        **(
            {"metadata_sha256": tree_digest((rel, sha256_file(main / rel)) for rel in shard_format.metadata_files)}
            if shard_format.metadata_files
            else {}
        ),
        "labels": count_labels(table),
        "stats": {
            "datasets": {str(k): int(v) for k, v in sorted(datasets.items(), key=lambda kv: str(kv[0]))},
            "genes_per_cell_hist": np.histogram(lengths, bins=np.r_[GENES_PER_CELL_EDGES, np.inf])[0].tolist(),
        },
    }
    write_bytes_atomic(Path(done), json.dumps(info, sort_keys=True).encode())
    return info
