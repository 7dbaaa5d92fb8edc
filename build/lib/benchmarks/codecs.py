"""Zarr read paths side by side: the loader's runs (sequential runs of ~256 cells, genes and counts) of
one shard set read five ways, in one process, best of ``rounds``.

1. zarr-python, the group opened on every read (the loader before ``shards.format.zarr.chunks``)
2. zarr-python, the arrays opened once per shard
3. zarr-python with the ``zarrs`` Rust codec pipeline, arrays opened once (if ``zarrs`` is installed)
4. ``tensorstore``'s zarr3 driver, arrays opened once (if installed)
5. cellshard's chunk reader (``ShardedArray``: the chunk index once, one range read, crc32c, zstd)

All five must return the same values (checked); the figures are cells/s and the cores the process kept
busy meanwhile (CPU time / wall time: a library that decodes on a thread pool uses more than one).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import zarr

from shards.format.zarr.chunks import ShardedArray, load_doc

__all__ = ["run"]

RUN = 256


def _shards(root: Path) -> list[tuple[Path, np.ndarray]]:
    manifest = json.loads((root / "index.json").read_text())
    out = []
    for s in manifest["shards"]:
        group = root / s["path"]
        out.append((group, zarr.open_group(str(group), mode="r")["offsets"][:]))
    return out


def _local(root: Path) -> Callable[[str, int, int | None], bytes]:
    def read_range(rel: str, lo: int, hi: int | None) -> bytes:
        with open(root / rel, "rb") as f:
            if lo < 0:
                f.seek(max(0, f.seek(0, 2) + lo))
                return f.read()
            f.seek(lo)
            return f.read(hi - lo)

    return read_range


def _opener(name: str) -> Callable[[Path], Callable[[str, int, int], np.ndarray]] | None:
    """For one shard (a group path): ``read(array, lo, hi)``."""
    if name == "zarr, group opened per read":
        return lambda g: lambda a, lo, hi: zarr.open_group(str(g), mode="r")[a][lo:hi]
    if name in ("zarr, opened once", "zarr + zarrs pipeline, opened once"):

        def open_once(g: Path):
            group = zarr.open_group(str(g), mode="r")
            arrays = {a: group[a] for a in ("genes", "counts")}
            return lambda a, lo, hi: arrays[a][lo:hi]

        return open_once
    if name == "tensorstore, opened once":
        try:
            import tensorstore as ts
        except ImportError:
            return None

        def open_ts(g: Path):
            arrays = {
                a: ts.open({"driver": "zarr3", "kvstore": {"driver": "file", "path": str(g / a)}}).result()
                for a in ("genes", "counts")
            }
            return lambda a, lo, hi: arrays[a][lo:hi].read().result()

        return open_ts
    if name == "cellshard chunk reader":

        def open_direct(g: Path):
            read_range = _local(g.parent)
            arrays = {}
            for a in ("genes", "counts"):
                doc = load_doc((g / a / "zarr.json").read_bytes(), a)
                arrays[a] = ShardedArray.open(read_range, f"{g.name}/{a}", doc, a)
            return lambda a, lo, hi: arrays[a].read(read_range, lo, hi)

        return open_direct
    raise ValueError(name)


PATHS = (
    "zarr, group opened per read",
    "zarr, opened once",
    "zarr + zarrs pipeline, opened once",
    "tensorstore, opened once",
    "cellshard chunk reader",
)


def _one(name: str, shards: list[tuple[Path, np.ndarray]]) -> tuple[float, float, list[int]] | None:
    opener = _opener(name)
    if opener is None:
        return None
    digests = []
    cells = 0
    t0, c0 = time.perf_counter(), time.process_time()
    for group, offsets in shards:
        read = opener(group)
        n = len(offsets) - 1
        for a in range(0, n, RUN):
            lo, hi = int(offsets[a]), int(offsets[min(n, a + RUN)])
            g, c = read("genes", lo, hi), read("counts", lo, hi)
            digests.append(int(np.asarray(g, dtype=np.int64).sum() + 3 * np.asarray(c, dtype=np.int64).sum()))
            cells += min(n, a + RUN) - a
    wall = time.perf_counter() - t0
    return cells / wall, (time.process_time() - c0) / wall, digests


def run(root: Path, rounds: int = 2) -> list[dict]:
    shards = _shards(root)
    rows, want = [], None
    for name in PATHS:
        pipeline = name == "zarr + zarrs pipeline, opened once"
        if pipeline:
            try:
                import zarrs  # noqa: F401
            except ImportError:
                rows.append({"path": name, "cells_per_s": None, "cores": None, "note": "zarrs not installed"})
                continue
        best = None
        for _ in range(rounds):
            with zarr.config.set({"codec_pipeline.path": "zarrs.ZarrsCodecPipeline"} if pipeline else {}):
                got = _one(name, shards)
            if got is None:
                break
            rate, cores, digests = got
            if want is None:
                want = digests
            if digests != want:
                raise AssertionError(f"{name}: read different values")
            if best is None or rate > best[0]:
                best = (rate, cores)
        rows.append(
            {
                "path": name,
                "cells_per_s": best[0] if best else None,
                "cores": best[1] if best else None,
                "note": "" if best else "not installed",
            }
        )
    return rows


def markdown(rows: list[dict]) -> str:
    lines = ["| read path | cells/s | cores busy |", "|---|---:|---:|"]
    for r in rows:
        if r["cells_per_s"]:
            lines.append(f"| {r['path']} | {r['cells_per_s']:,.0f} | {r['cores']:.2f} |")
        else:
            lines.append(f"| {r['path']} | {r['note']} | |")
    return "\n".join(lines)


if __name__ == "__main__":
    import sys

    print(markdown(run(Path(sys.argv[1]))))
