"""The manifest of a finished build (``docs/FORMAT.md``): shards, splits, vocabulary, medians, tokenizer,
source, options, counters and statistics. ``index.json`` is sealed and written last by ``dump_manifest``.
"""

from __future__ import annotations

from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np

from shards.format.manifest import FORMAT_VERSION
from shards.storage.atomic import sha256_file

from ..medians import BIN_RATIO, NORM_TOTAL
from ..split import SPLIT_NAMES
from .passes import GENES_PER_CELL_EDGES

__all__ = ["build_manifest"]


def _package_version() -> str:
    try:
        return version("cellshard")
    except PackageNotFoundError:  # running from a source tree that is not installed
        return "0+unknown"


def build_manifest(
    opts, out: Path, prepared, vocab, infos, summaries, dropped, build_id, presence, labels=None
) -> dict:
    """The manifest document of the shards in ``infos`` (their ``stats`` are folded into the set's): the
    writer's side, the one place outside ``shards/format`` that spells the manifest's keys (the schema,
    ``index.schema.json``, validates what it writes; readers use ``shards.format.Manifest``).
    Long because it is one document literal, key for key as docs/FORMAT.md lists them."""
    shards = [infos[i] for i in sorted(infos)]
    datasets: dict[str, int] = {}
    hist = np.zeros(len(GENES_PER_CELL_EDGES), dtype=np.int64)
    for s in shards:
        stats = s.pop("stats")
        s.pop("labels", None)  # in labels.npz, not the manifest
        for k, v in stats["datasets"].items():
            datasets[k] = datasets.get(k, 0) + v
        hist += np.asarray(stats["genes_per_cell_hist"])
    skipped: dict[str, int] = {}
    for summary in summaries.values():
        for k, v in summary["skipped"].items():
            skipped[k] = skipped.get(k, 0) + v
    splits = {
        name: {
            "n_cells": sum(s["n_cells"] for s in shards if s["split"] == name),
            "n_tokens": sum(s["n_tokens"] for s in shards if s["split"] == name),
            "n_shards": sum(1 for s in shards if s["split"] == name),
        }
        for name in SPLIT_NAMES
    }
    return {
        "format_version": FORMAT_VERSION,
        "format": opts.format,
        "build_id": build_id,
        "n_cells": sum(s["n_cells"] for s in shards),
        "n_tokens": sum(s["n_tokens"] for s in shards),
        "shards": shards,
        "splits": splits,
        "vocab": {
            "file": "vocab.csv",
            "sha256": sha256_file(out / "vocab.csv"),
            "size": vocab.size,
            "special_tokens": dict(sorted(vocab.special.items(), key=lambda kv: kv[1])),
        },
        "gene_medians": {
            "file": "gene_medians.csv",
            "sha256": sha256_file(out / "gene_medians.csv"),
            "source": "given" if opts.gene_medians else "computed",
            "method": f"log-binned histograms, bin ratio {BIN_RATIO}",
        },
        "tokenizer": {
            "name": "rank_value",
            "parameters": {
                "normalization_total": NORM_TOTAL,
                "order": "count/median descending, ties by token ascending",
                "truncation": None,
                "record_columns": ["genes", "counts"],
            },
        },
        "source": {
            **prepared.source,
            "inputs": [f.record for f in prepared.inputs],
            "obs_columns": list(prepared.obs_columns),
            "cells_matched": prepared.cells_matched,
        },
        "options": {
            "cells_per_shard": opts.cells_per_shard,
            "val_fraction": opts.val_fraction,
            "split_by": opts.split_by,
        },
        **({"presence": presence} if presence else {}),
        **({"labels": labels} if labels else {}),
        "seed": opts.seed,
        "counters": {"skipped_cells": skipped, "dropped_genes": dropped},
        "stats": {
            "datasets": dict(sorted(datasets.items())),
            "genes_per_cell_hist": {"edges": list(GENES_PER_CELL_EDGES), "counts": hist.tolist()},
        },
        "created_by": {"package": "cellshard", "version": _package_version()},
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
