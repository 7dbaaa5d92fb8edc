"""Loader throughput: the I/O limit, the collate limit and end-to-end streaming, on one shard set.

(a) read + decode the same cell runs the loader reads (I/O limit); (b) collate + mask on in-memory
cells (compute limit); (c) ``ShardedCellDataset`` through ``CellDataLoader`` with 0/1/2 workers;
(d) the overhead of mixing, weighting, grouping and panels over plain streaming (``mixing``). Each
end-to-end run happens in a fresh spawned process so its peak RSS (with its workers) is its own. Also a
shuffle-quality figure: mean distinct ``dataset_id``s per batch next to a perfect shuffle's expectation.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from shards import CellDataLoader, ShardedCellDataset
from shards.format.manifest import dump_manifest
from shards.loading.collate import Collator
from shards.loading.readers import ShardSetReader

from . import mixing
from .memory import PeakRSS
from .report import Result
from .spawned import run_spawned

__all__ = ["run"]


def _end_to_end(root: str, workers: int, batch: int, context: int, max_batches: int | None, queue) -> None:
    """One epoch through ``CellDataLoader``, timed in steady state: with ``max_batches`` None, epoch 0 is
    read first, untimed, by persistent workers (their start, ~3-5 s of imports and kernel loading per
    worker here, is reported as ``startup_seconds``: on a 60k-cell epoch it would otherwise be most of
    the figure), and epoch 1 is timed. The consumer does as little as it can (the token count in NumPy:
    a torch reduction per batch starts torch's intra-op threads, which compete with the loader's)."""
    _warm_up(Path(root))  # this process's compiled kernels
    ds = ShardedCellDataset(root, batch_size=batch, context_length=context, rank=0, world_size=1, return_cell_ids=True)
    steady = max_batches is None
    loader = CellDataLoader(ds, num_workers=workers, persistent_workers=steady and workers > 0)
    startup = 0.0
    with PeakRSS() as peak:
        if steady:
            ds.set_epoch(0)
            t0 = time.perf_counter()
            for _ in loader:
                pass
            startup = time.perf_counter() - t0
        ds.set_epoch(1 if steady else 0)
        cells = tokens = 0
        ids = []
        t0 = time.perf_counter()
        for i, b in enumerate(loader):
            cells += b["input_ids"].shape[0]
            tokens += int(b["attention_mask"].numpy().sum())
            ids.append(b["cell_id"])
            if max_batches is not None and i + 1 >= max_batches:
                break
        seconds = time.perf_counter() - t0
        del loader  # shut the workers down inside the measurement
    queue.put(
        {
            "seconds": seconds,
            "startup_seconds": startup,
            "cells": cells,
            "tokens": tokens,
            "rss_mib": peak.total_mib,
            "rss_process_mib": peak.process_mib,
            "batches": ids,
        }
    )


def _spawned(*args) -> dict:
    return run_spawned(_end_to_end, *args)


def _warm_up(root: Path) -> None:
    """Load the compiled kernels (numba's on-disk cache, ~0.5 s the first time in a process) outside
    the timed region, through another reader so that no shard of the timed one is open yet."""
    ShardSetReader(root).read(0, 0, 1)


def _io_limit(root: Path, run: int = 256) -> tuple[float, int, int]:
    reader = ShardSetReader(root)
    _warm_up(root)
    t0 = time.perf_counter()
    cells = tokens = 0
    for i, n in enumerate(reader.shard_cells.tolist()):
        for a in range(0, n, run):
            genes, _, offsets, _ = reader.read(i, a, min(n, a + run))
            cells += len(offsets) - 1
            tokens += len(genes)
    return time.perf_counter() - t0, cells, tokens


def _collate_limit(root: Path, batch: int, context: int) -> tuple[float, int]:
    reader = ShardSetReader(root)
    genes, _, offsets, ids = reader.read(0, 0, min(int(reader.shard_cells[0]), 50 * batch))
    col = Collator(reader.vocab(), context)
    n = len(offsets) - 1
    col(genes[: offsets[1]], offsets[:2], ids[:1], np.zeros(1, bool), 0)  # load the compiled kernel first
    t0 = time.perf_counter()
    done = 0
    for a in range(0, n - batch + 1, batch):
        lo, hi = offsets[a], offsets[a + batch]
        col(genes[lo:hi], offsets[a : a + batch + 1] - lo, ids[a : a + batch], np.zeros(batch, bool), 0)
        done += batch
    return time.perf_counter() - t0, done


def _repeated(root: Path, times: int, out: Path) -> Path:
    """A shard set whose shards are the same files listed ``times`` times (symlinks): RSS must not grow."""
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    manifest = json.loads((root / "index.json").read_text())
    shards, first = [], 0
    for _ in range(times):
        for s in manifest["shards"]:
            k = len(shards)
            entry = json.loads(json.dumps(s))
            for f, src in [(entry, s), *zip(entry["files"], s["files"], strict=True)]:
                new = f"shard-{k:06d}" + src["path"][len("shard-000000") :]
                (out / new).symlink_to((root / src["path"]).resolve())
                f["path"] = new
            entry["first_cell"] = first
            first += s["n_cells"]
            shards.append(entry)
    manifest["shards"] = shards
    manifest["n_cells"] = sum(s["n_cells"] for s in shards)
    manifest["n_tokens"] = sum(s["n_tokens"] for s in shards)
    for name in ("vocab.csv", "gene_medians.csv"):
        shutil.copy(root / name, out / name)
    dump_manifest(out, manifest)  # re-sealed: its checksum covers the new shard list
    return out


def _shuffle_quality(root: Path, batches: list[list[str]]) -> tuple[float, float]:
    manifest = json.loads((root / "index.json").read_text())
    stats = manifest["stats"]["datasets"]
    if manifest["format"] == "zarr":
        tables = [
            pq.read_table(root / s["files"][0]["path"], columns=["cell_id", "dataset_id"])
            for s in manifest["shards"]
            if s["split"] == "train"
        ]
        ds_of = {
            c: d for t in tables for c, d in zip(t["cell_id"].to_pylist(), t["dataset_id"].to_pylist(), strict=True)
        }
    else:
        return float("nan"), float("nan")
    got = float(np.mean([len({ds_of[c] for c in b}) for b in batches]))
    total = sum(stats.values())
    b = len(batches[0])
    expected = float(sum(1 - (1 - n / total) ** b for n in stats.values()))
    return got, expected


def run(zarr_root: Path, wds_root: Path, out: Path, batch: int = 64, context: int = 2048) -> list[Result]:
    results: list[Result] = []
    cfg = {"batch_size": batch, "context_length": context}
    for fmt, root in (("zarr", zarr_root), ("webdataset", wds_root)):
        dt, cells, tokens = _io_limit(root)
        results.append(Result("loader", f"{fmt} read+decode (I/O limit)", "cells_per_sec", cells / dt, "cells/s", cfg))
        results.append(
            Result("loader", f"{fmt} read+decode (I/O limit)", "tokens_per_sec", tokens / dt, "tokens/s", cfg)
        )
    dt, cells = _collate_limit(zarr_root, batch, context)
    results.append(Result("loader", "collate+mask (compute limit)", "cells_per_sec", cells / dt, "cells/s", cfg))
    for fmt, root in (("zarr", zarr_root), ("webdataset", wds_root)):
        for workers in (0, 1, 2):
            r = _spawned(str(root), workers, batch, context, None)
            c = {**cfg, "format": fmt, "workers": workers}
            name = f"{fmt} end to end, {workers} workers"
            results.append(Result("loader", name, "cells_per_sec", r["cells"] / r["seconds"], "cells/s", c))
            results.append(Result("loader", name, "tokens_per_sec", r["tokens"] / r["seconds"], "tokens/s", c))
            results.append(Result("loader", name, "peak_rss", r["rss_mib"], "MiB", c))
            results.append(Result("loader", name, "startup_seconds", r["startup_seconds"], "s", c))
            if fmt == "zarr" and workers == 0:
                got, expected = _shuffle_quality(root, r["batches"])
                results.append(Result("loader", "shuffle: distinct dataset_id per batch", "mean", got, "datasets", c))
                results.append(
                    Result("loader", "shuffle: perfect-shuffle expectation", "mean", expected, "datasets", c)
                )
    n_batches = 400
    for times in (1, 10):
        with tempfile.TemporaryDirectory(prefix="cellshard-repeat-") as tmp:  # symlinks: not a result
            root = _repeated(zarr_root, times, Path(tmp) / f"repeat{times}") if times > 1 else zarr_root
            r = _spawned(str(root), 0, batch, context, n_batches)
        c = {**cfg, "shard_set_copies": times, "batches": n_batches}
        results.append(
            Result("loader", f"zarr x{times} shard set, {n_batches} batches", "peak_rss", r["rss_mib"], "MiB", c)
        )
    return results + mixing.run(zarr_root, out / "mixing", batch, context)


def ratios(results: list[Result]) -> list[tuple[str, float, str]]:
    """The issue's targets as ratios of figures of this run: (what, value, target)."""
    v = {r.name: r.value for r in results if r.metric == "cells_per_sec"}
    limit = min(v["zarr read+decode (I/O limit)"], v["collate+mask (compute limit)"])
    best_zarr = max(v[f"zarr end to end, {w} workers"] for w in (0, 1, 2))
    best_wds = max(v[f"webdataset end to end, {w} workers"] for w in (0, 1, 2))
    rss = {r.config["shard_set_copies"]: r.value for r in results if "shard_set_copies" in r.config}
    zarr0 = v["zarr end to end, 0 workers"]
    return [
        ("zarr end to end / min(I/O, collate limit)", best_zarr / limit, ">= 0.8"),
        ("zarr end to end, 0 workers, cells/s / 25,000", zarr0 / 25_000, ">= 1"),
        ("collate limit, cells/s / 60,000", v["collate+mask (compute limit)"] / 60_000, ">= 1"),
        ("zarr I/O limit, cells/s / 50,000", v["zarr read+decode (I/O limit)"] / 50_000, ">= 1"),
        ("webdataset end to end / zarr end to end", best_wds / best_zarr, ">= 0.8"),
        ("zarr end to end, 2 workers / 0 workers", v["zarr end to end, 2 workers"] / zarr0, ">= 1.0"),
        ("peak RSS, 10x shard set / 1x", rss[10] / rss[1], "~1 (flat)"),
        *mixing.ratios(results),
    ]
