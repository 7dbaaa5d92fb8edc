"""Ingest throughput: h5ad → Zarr / WebDataset and SOMA → Zarr with cellshard, next to Geneformer's
tokenizer algorithm.

All figures come from one run on the same cells; ratios are computed from them, never from constants.
The SOMA source is a Census-shaped TileDB-SOMA copy of the same corpus on local disk (written once,
untimed, and cached beside the corpus), read through the ``--census-version V --census-uri DIR`` path.
Every build runs in a fresh process (``build_probe``) so that each has its own peak RSS; the SOMA build
is also run on a quarter of the cells (an obs filter on ``soma_joinid``) to show that memory does not
grow with the corpus.
"""

from __future__ import annotations

import glob
import shutil
import time
from pathlib import Path

import numpy as np

from ingest import SynthSpec, synthesize
from ingest.census_copy import write_census_copy
from ingest.sources.h5ad import H5adInput, InputOptions
from shards import read_vocab
from shards.tokens import TokenMap, rank_value_encode

from .baselines.geneformer_tokenizer import tokenize_file
from .build_probe import probe_build
from .report import Result

__all__ = ["ratios", "run"]

CENSUS_VERSION = "2025-01-30"
#: work units of 8,192 cells: enough of them for every thread or worker to have one at a time
UNIT_CELLS = 8192


def corpus(out: Path, cells: int, pattern: str | None) -> list[Path]:
    if pattern:
        return [Path(p) for p in sorted(glob.glob(pattern))]
    target = out / "corpus" / f"syn{cells}.h5ad"
    existing = sorted(target.parent.glob(f"syn{cells}-*.h5ad"))
    if existing:
        return existing
    return [p for p, _ in synthesize(SynthSpec(cells=cells, genes=10_000, datasets=6, files=3, seed=1), target)]


def tokenize_kernel(
    path: Path, vocab: dict[str, int], medians: dict[str, float], block: int = 8192, limit: int | None = None
) -> int:
    """The same work as the Geneformer baseline with cellshard's code: block reads + rank-value encoding."""
    src = H5adInput(path, InputOptions())
    try:
        ids = src.gene_ids()
        col_token = np.array([vocab.get(g, -1) for g in ids], dtype=np.int64)
        tmap = TokenMap(col_token, {vocab[g]: m for g, m in medians.items()})
        n = src.n_obs if limit is None else min(limit, src.n_obs)
        for start in range(0, n, block):
            rank_value_encode(src.read_block(start, min(n, start + block), ids), tmap)
        return n
    finally:
        src.close()


def census_copy(files: list[Path]) -> Path:
    """The corpus as a Census-shaped SOMA collection, written once (untimed) and reused."""
    root = files[0].parent / f"census-{files[0].stem.rsplit('-', 1)[0]}"
    if not (root / "census_data").exists():
        shutil.rmtree(root, ignore_errors=True)
        write_census_copy(files, root, version=CENSUS_VERSION)
    return root


def _timed_build(
    name: str, options: dict, dest: Path, workers: int, fmt: str, extra: dict | None = None, threads: int = 1
):
    shutil.rmtree(dest, ignore_errors=True)
    run = {"out": str(dest), "format": fmt, "workers": workers, "threads": threads, "quiet": True, **options}
    stats = probe_build(run)
    n = stats["n_cells"]
    cfg = {"cells": n, "workers": workers, "threads": threads, "format": fmt, **(extra or {})}
    rows = [
        Result("ingest", name, "cells_per_sec", n / stats["seconds"], "cells/s", cfg),
        Result("ingest", name, "cells_per_sec_per_process", n / stats["seconds"] / workers, "cells/s", cfg),
        Result("ingest", name, "peak_rss", stats["peak_rss_mib"], "MiB", cfg),
    ]
    return rows, stats


def run(
    out: Path, cells: int, pattern: str | None = None, workers: int = 1, soma: bool = True, threads: int = 2
) -> list[Result]:
    """Every build once with one thread per process, and (``threads`` > 1) again with ``threads``."""
    files = corpus(out, cells, pattern)
    root = census_copy(files) if soma else None
    for p in files:  # warm-up, untimed: a cold page cache would bias the first row
        p.read_bytes()
    results: list[Result] = []
    built: dict[str, Path] = {}
    h5ad = {"input": [str(p) for p in files], "unit_cells": UNIT_CELLS}
    for fmt in ("zarr", "webdataset"):
        rows, _ = _timed_build(f"cellshard h5ad->{fmt}", h5ad, out / f"build-{fmt}", workers, fmt)
        results += rows
        built[fmt] = out / f"build-{fmt}"
        if threads > 1:
            name = f"cellshard h5ad->{fmt}, {threads} threads"
            rows, _ = _timed_build(name, h5ad, out / f"build-{fmt}-t", workers, fmt, threads=threads)
            results += rows
            shutil.rmtree(out / f"build-{fmt}-t", ignore_errors=True)
    if root is not None:
        census = {"census_version": CENSUS_VERSION, "census_uri": str(root), "unit_cells": UNIT_CELLS}
        if threads > 1:
            name = f"cellshard soma->zarr, {threads} threads"
            rows, _ = _timed_build(name, census, out / "build-soma-t", workers, "zarr", threads=threads)
            results += rows
            shutil.rmtree(out / "build-soma-t", ignore_errors=True)
        rows, stats = _timed_build("cellshard soma->zarr", census, out / "build-soma", workers, "zarr")
        results += rows
        n = stats["n_cells"]
        cfg = {"cells": n, "workers": workers, "source": "Census-shaped copy on local disk"}
        results.append(
            Result(
                "ingest",
                "cellshard soma->zarr",
                "disk_per_million_cells",
                stats["bytes"] / n * 1e6 / 1024**3,
                "GiB",
                cfg,
            )
        )
        results.append(
            Result(
                "ingest",
                "cellshard soma->zarr",
                "minutes_per_million_cells",
                stats["seconds"] / n * 1e6 / 60,
                "min",
                cfg,
            )
        )
        quarter = {**census, "obs_filter": f"soma_joinid < {n // 4}"}
        rows, _ = _timed_build(
            "cellshard soma->zarr, 1/4 of the cells", quarter, out / "build-soma-quarter", workers, "zarr"
        )
        results += [r for r in rows if r.metric == "peak_rss"]
        shutil.rmtree(out / "build-soma", ignore_errors=True)
        shutil.rmtree(out / "build-soma-quarter", ignore_errors=True)
    vocab = read_vocab(built["zarr"] / "vocab.csv").token_of()
    lines = (built["zarr"] / "gene_medians.csv").read_text().splitlines()[1:]
    medians = {g: float(m) for g, m in (line.split(",") for line in lines)}
    tokenize_kernel(files[0], vocab, medians, limit=2048)  # compile for this corpus's dtypes, untimed
    t0 = time.perf_counter()
    n = sum(tokenize_kernel(p, vocab, medians) for p in files)
    dt = time.perf_counter() - t0
    results.append(
        Result(
            "ingest",
            "cellshard tokenizer kernel",
            "cells_per_sec",
            n / dt,
            "cells/s",
            {"cells": n, "workers": 1, "note": "read + rank-value tokenize, the baseline's work"},
        )
    )
    t0 = time.perf_counter()
    n = sum(tokenize_file(p, vocab, medians)[0] for p in files)
    dt = time.perf_counter() - t0
    results.append(
        Result(
            "ingest",
            "geneformer tokenizer algorithm",
            "cells_per_sec",
            n / dt,
            "cells/s",
            {"cells": n, "workers": 1, "note": "tokenize only: no shuffle, no shard writing"},
        )
    )
    return results


def ratios(results: list[Result]) -> list[tuple[str, float, str]]:
    """Same-run ratios: SOMA against h5ad ingest, and peak memory at a quarter of the cells."""
    v = {(r.name, r.metric): r.value for r in results}
    out = []
    soma, h5ad = v.get(("cellshard soma->zarr", "cells_per_sec")), v.get(("cellshard h5ad->zarr", "cells_per_sec"))
    if soma and h5ad:
        out.append(("SOMA -> Zarr / h5ad -> Zarr ingest rate", soma / h5ad, ">= 0.5"))
    for name, value in v.items():
        if name[0].startswith("cellshard h5ad->zarr") and name[1] == "cells_per_sec_per_process":
            out.append((f"{name[0]}: cells/s per process / 15,000", value / 15_000, ">= 1"))
    kernel, geneformer = (
        v.get(("cellshard tokenizer kernel", "cells_per_sec")),
        v.get(("geneformer tokenizer algorithm", "cells_per_sec")),
    )
    if kernel and geneformer:
        out.append(("tokenizer: cellshard kernel / Geneformer's algorithm", kernel / geneformer, ">= 3"))
    full, quarter = (
        v.get(("cellshard soma->zarr", "peak_rss")),
        v.get(("cellshard soma->zarr, 1/4 of the cells", "peak_rss")),
    )
    if full and quarter:
        out.append(("SOMA ingest peak RSS, all cells / a quarter of them", full / quarter, "~1 (flat)"))
    return out
