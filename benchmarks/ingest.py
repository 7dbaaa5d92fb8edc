"""Ingest throughput: h5ad → Zarr / WebDataset with cellshard, next to Geneformer's tokenizer algorithm.

All figures come from one run on the same cells; ratios are computed from them, never from constants.
"""

from __future__ import annotations

import glob
import shutil
import time
from pathlib import Path

import numpy as np

from ingest import BuildOptions, SynthSpec, build, synthesize
from ingest.h5ad import H5adInput, InputOptions
from ingest.tokenize import TokenMap, rank_value_encode
from shards import read_vocab

from .baselines.geneformer_tokenizer import tokenize_file
from .report import Result

__all__ = ["run"]


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


def run(out: Path, cells: int, pattern: str | None = None, workers: int = 1) -> list[Result]:
    files = corpus(out, cells, pattern)
    for p in files:  # warm-up, untimed: numba's first compile and a cold page cache would bias the first row
        p.read_bytes()
    results: list[Result] = []
    built: dict[str, Path] = {}
    for fmt in ("zarr", "webdataset"):
        dest = out / f"build-{fmt}"
        shutil.rmtree(dest, ignore_errors=True)
        t0 = time.perf_counter()
        manifest = build(
            BuildOptions(input=[str(p) for p in files], out=str(dest), format=fmt, workers=workers, quiet=True)
        )
        dt = time.perf_counter() - t0
        n = manifest["n_cells"]
        cfg = {"cells": n, "workers": workers, "format": fmt}
        results.append(Result("ingest", f"cellshard h5ad->{fmt}", "cells_per_sec", n / dt, "cells/s", cfg))
        results.append(
            Result("ingest", f"cellshard h5ad->{fmt}", "cells_per_sec_per_process", n / dt / workers, "cells/s", cfg)
        )
        built[fmt] = dest
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
