"""Loaders side by side on the same cells, each producing cellshard's masked, padded batches.

Each loader runs in a fresh spawned process, timed from the creation of its iterator over a whole epoch
of the train split (I/O included); its peak memory (main process plus workers) is measured there too.
Shuffle quality comes from the cell ids of the batches: mean distinct ``dataset_id``s per batch and the
total-variation distance between a batch's dataset mix and the corpus mix, against a perfect shuffle.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from shards.format.manifest import load_manifest

from .memory import PeakRSS
from .report import Result
from .spawned import run_spawned

__all__ = ["LOADERS", "compare", "shuffle_quality", "whole_epoch"]

LOADERS = (
    "cellshard zarr",
    "cellshard webdataset",
    "per-cell AnnData Dataset",
    "plain webdataset",
    "tiledbsoma-ml ExperimentDataset",
    "arrayloaders ZarrSparseDataset",
)


def _make(kind: str, paths: dict, batch: int, context: int, workers: int):
    if kind.startswith("cellshard"):
        from shards import CellDataLoader, ShardedCellDataset

        root = paths["zarr" if kind.endswith("zarr") else "wds"]
        ds = ShardedCellDataset(
            str(root), batch_size=batch, context_length=context, rank=0, world_size=1, return_cell_ids=True
        )
        ds.set_epoch(0)
        return CellDataLoader(ds, num_workers=workers)
    from .baselines.loaders import arrayloaders_loader, per_cell_loader, plain_webdataset, tiledbsoma_ml_loader

    if kind == "tiledbsoma-ml ExperimentDataset":
        return tiledbsoma_ml_loader(paths["soma"], paths["zarr"], batch, context, workers)
    if kind == "per-cell AnnData Dataset":
        return per_cell_loader([Path(p) for p in paths["h5ad"]], paths["zarr"], batch, context, workers)
    if kind == "arrayloaders ZarrSparseDataset":
        return arrayloaders_loader(Path(paths["arrayloaders"]), paths["zarr"], batch, context, workers)
    if kind == "plain webdataset":
        return plain_webdataset(paths["wds"], batch, context, workers)
    raise ValueError(kind)


def _epoch(kind: str, paths: dict, batch: int, context: int, workers: int, max_cells: int | None, queue) -> None:
    import shards.loading.dataset
    import shards.loading.loader  # noqa: F401

    from .baselines import loaders  # noqa: F401

    ids: list[list[str]] = []
    cells = tokens = 0
    with PeakRSS() as peak:
        t0 = time.perf_counter()
        loader = _make(kind, paths, batch, context, workers)
        for b in loader:
            cells += b["input_ids"].shape[0]
            tokens += int(b["attention_mask"].sum())
            ids.append([str(c) for c in b["cell_id"]])
            if max_cells is not None and cells >= max_cells:
                break
        seconds = time.perf_counter() - t0
        del loader
    queue.put(
        {
            "seconds": seconds,
            "cells": cells,
            "tokens": tokens,
            "rss_mib": peak.total_mib,
            "batches": ids,
            "shape": [batch, context],
        }
    )


def _spawned(*args) -> dict:
    return run_spawned(_epoch, *args)


def _dataset_of(zarr_root: Path) -> dict[str, str]:
    manifest = load_manifest(zarr_root)
    out: dict[str, str] = {}
    for s in manifest["shards"]:
        t = pq.read_table(zarr_root / s["files"][0]["path"], columns=["cell_id", "dataset_id"])
        out.update(zip(t["cell_id"].to_pylist(), t["dataset_id"].to_pylist(), strict=True))
    return out


def shuffle_quality(batches: list[list[str]], dataset_of: dict[str, str], corpus: dict[str, int]) -> dict:
    """Mean distinct datasets per batch and mean total-variation distance from the corpus mix."""
    names = sorted(corpus)
    index = {d: i for i, d in enumerate(names)}
    mix = np.array([corpus[d] for d in names], dtype=float)
    mix /= mix.sum()
    full = [b for b in batches if len(b) == len(batches[0])]
    distinct, tv = [], []
    for b in full:
        counts = np.bincount([index[dataset_of[c]] for c in b], minlength=len(names))
        distinct.append(int((counts > 0).sum()))
        tv.append(0.5 * float(np.abs(counts / counts.sum() - mix).sum()))
    size = len(full[0]) if full else 0
    rng = np.random.default_rng(0)  # a perfect shuffle, simulated on the same mix and batch size
    perfect = rng.multinomial(size, mix, size=2_000) if size else np.zeros((1, len(names)))
    return {
        "distinct": float(np.mean(distinct)) if distinct else float("nan"),
        "tv": float(np.mean(tv)) if tv else float("nan"),
        "perfect_distinct": float((perfect > 0).sum(axis=1).mean()),
        "perfect_tv": float((0.5 * np.abs(perfect / max(size, 1) - mix).sum(axis=1)).mean()),
    }


def whole_epoch(cells: int, epoch_cells: int, batch: int, workers: int) -> bool:
    """Whether a loader served an epoch: all cells but a remainder smaller than one batch per worker
    (cellshard's sampler drops it so that every worker yields whole batches)."""
    return cells >= epoch_cells - batch * max(1, workers)


def compare(
    paths: dict, *, batch: int, context: int, workers: tuple[int, ...], per_cell_max: int | None, epoch_cells: int
) -> list[Result]:
    """Every loader at every worker count; the per-cell baseline over ``per_cell_max`` cells at most."""
    dataset_of = _dataset_of(Path(paths["zarr"]))
    corpus = load_manifest(paths["zarr"])["stats"]["datasets"]
    results = []
    for kind in LOADERS:
        for w in workers:
            cap = per_cell_max if kind == "per-cell AnnData Dataset" else None
            r = _spawned(kind, paths, batch, context, w, cap)
            cfg = {
                "loader": kind,
                "workers": w,
                "batch_size": batch,
                "context_length": context,
                "cells": r["cells"],
                "whole_epoch": whole_epoch(r["cells"], epoch_cells, batch, w),
            }
            name = f"{kind}, {w} workers"
            results.append(Result("compare", name, "cells_per_sec", r["cells"] / r["seconds"], "cells/s", cfg))
            results.append(Result("compare", name, "tokens_per_sec", r["tokens"] / r["seconds"], "tokens/s", cfg))
            results.append(Result("compare", name, "peak_rss", r["rss_mib"], "MiB", cfg))
            if w == workers[0]:
                q = shuffle_quality(r["batches"], dataset_of, corpus)
                results.append(Result("shuffle", kind, "distinct_datasets_per_batch", q["distinct"], "datasets", cfg))
                results.append(Result("shuffle", kind, "tv_distance_to_corpus_mix", q["tv"], "", cfg))
                if kind == LOADERS[0]:
                    results.append(
                        Result(
                            "shuffle",
                            "perfect shuffle",
                            "distinct_datasets_per_batch",
                            q["perfect_distinct"],
                            "datasets",
                            cfg,
                        )
                    )
                    results.append(
                        Result("shuffle", "perfect shuffle", "tv_distance_to_corpus_mix", q["perfect_tv"], "", cfg)
                    )
    return results
