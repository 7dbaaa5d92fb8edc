"""Mixing and weighting overhead: cells/s of a sampled epoch against plain streaming, same cells, one run.

Every configuration streams one whole epoch (``num_samples`` = the set's size, half of it for the
subsampling one) from the same Zarr shard set, in process (0 workers, so the figure is the loader's own CPU
cost), with the real collator. Rounds alternate the configurations and the best round of each counts,
so drift on a shared machine affects all alike. The target is overhead < 10% (ratio >= 0.9).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from shards import ShardedCellDataset
from shards.loading.readers import ShardSetReader

from .report import Result

__all__ = ["configs", "ratios", "run"]


def configs(root: Path, out: Path) -> dict[str, dict[str, Any]]:
    reader = ShardSetReader(root)
    n = int(reader.shard_cells.sum())
    vocab = reader.vocab()
    out.mkdir(parents=True, exist_ok=True)
    panel = out / "panel-half.csv"
    panel.write_text("Ensembl_ID\n" + "\n".join(vocab.gene_ids[::2]) + "\n")
    one = str(root)
    return {
        "plain": {"path": one},
        "2 streams, weights 1:1": {
            "path": [{"path": one, "weight": 1}, {"path": one, "weight": 1}],
            "num_samples": n,
        },
        "weighted cell_type, no replacement": {
            "path": one,
            "num_samples": n // 2,
            "weighting": {"column": "cell_type", "smoothing": 100},
        },
        "weighted cell_type, replacement": {
            "path": one,
            "num_samples": n,
            "replacement": True,
            "weighting": {"column": "cell_type", "smoothing": 100},
        },
        "grouped by dataset_id": {"path": one, "group_by": "dataset_id", "remainder": "pad"},
        "gene panel (half the genes)": {"path": one, "panels": {"files": [str(panel)]}},
    }


def _epoch(spec: dict[str, Any], batch: int, context: int) -> tuple[float, int, float]:
    spec = dict(spec)
    t0 = time.perf_counter()
    ds = ShardedCellDataset(spec.pop("path"), batch_size=batch, context_length=context, rank=0, world_size=1, **spec)
    setup = time.perf_counter() - t0
    ds.set_epoch(0)
    cells = 0
    t0 = time.perf_counter()
    for b in ds:
        cells += b["input_ids"].shape[0]
    return time.perf_counter() - t0, cells, setup


def run(zarr_root: Path, out: Path, batch: int = 64, context: int = 2048, rounds: int = 3) -> list[Result]:
    specs = configs(zarr_root, out)
    best: dict[str, tuple[float, int, float]] = {}
    for _ in range(rounds):
        for name, spec in specs.items():
            seconds, cells, setup = _epoch(spec, batch, context)
            if name not in best or cells / seconds > best[name][1] / best[name][0]:
                best[name] = (seconds, cells, setup)
    results = []
    for name, (seconds, cells, setup) in best.items():
        cfg = {"batch_size": batch, "context_length": context, "workers": 0, "rounds": rounds, "cells": cells}
        results.append(Result("mixing", name, "cells_per_sec", cells / seconds, "cells/s", cfg))
        results.append(Result("mixing", name, "setup_seconds", setup, "s", cfg))
    return results


def ratios(results: list[Result]) -> list[tuple[str, float, str]]:
    v = {r.name: r.value for r in results if r.group == "mixing" and r.metric == "cells_per_sec"}
    return [(f"{name} / plain, cells/s", v[name] / v["plain"], ">= 0.9") for name in v if name != "plain"]
