"""``ingest inspect``: a shard set's summary from its manifest (no shard is read)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from shards.format.manifest import read_manifest

from .sources.registry import source_kind

__all__ = ["render", "summary"]


def summary(directory: Path | str) -> dict[str, Any]:
    m = read_manifest(directory)
    return {
        "path": str(directory),
        "format": m.format,
        "n_cells": m.n_cells,
        "n_tokens": m.n_tokens,
        "n_shards": len(m.shards),
        "mean_genes_per_cell": round(m.n_tokens / m.n_cells, 1) if m.n_cells else 0.0,
        "splits": {k: dataclasses.asdict(v) for k, v in m.splits.items()},
        "datasets": m.stats.datasets,
        "genes_per_cell_hist": m.stats.genes_per_cell_hist,
        "source": _source_line(m.source_kind, m.source),
        "presence": dataclasses.asdict(m.presence) if m.presence else None,
        "vocab_size": m.vocab.size,
        "counters": dataclasses.asdict(m.counters),
        "seed": m.seed,
        "created_by": m.created_by,
    }


def _source_line(kind: str, src: dict) -> str:
    what = source_kind(kind).summary(src)
    if src.get("obs_filter"):
        what += f", obs: {src['obs_filter']}"
    if src.get("var_filter"):
        what += f", var: {src['var_filter']}"
    return what + f"; {src.get('cells_matched', 0):,} cells matched"


def render(s: dict[str, Any]) -> str:
    lines = [
        f"shard set  {s['path']}  ({s['format']})",
        f"source     {s['source']}",
        f"cells      {s['n_cells']:,} in {s['n_shards']} shards; {s['n_tokens']:,} tokens "
        f"({s['mean_genes_per_cell']} genes per cell)",
        "splits     "
        + ", ".join(f"{k}: {v['n_cells']:,} cells / {v['n_shards']} shards" for k, v in s["splits"].items()),
        f"vocab      {s['vocab_size']:,} tokens",
        *(
            [f"presence   {s['presence']['file']}: {s['presence']['n_pairs']:,} measured (dataset, gene) pairs"]
            if s["presence"]
            else []
        ),
        f"datasets   {len(s['datasets'])}",
    ]
    lines += [f"  {k:<40} {v:>10,}" for k, v in s["datasets"].items()]
    hist = s["genes_per_cell_hist"]
    if hist:
        lines.append("genes/cell")
        edges, counts = hist["edges"], hist["counts"]
        peak = max(counts) or 1
        for i, c in enumerate(counts):
            hi = f"{edges[i + 1]:,}" if i + 1 < len(edges) else "inf"
            lines.append(f"  [{edges[i]:>6,}, {hi:>6}) {c:>10,} {'#' * round(30 * c / peak)}")
    sk = s["counters"]["skipped_cells"]
    dg = s["counters"]["dropped_genes"]
    lines.append("skipped    " + (", ".join(f"{k}: {v:,}" for k, v in sk.items()) or "none") + " cells")
    lines.append("dropped    " + (", ".join(f"{k}: {v:,}" for k, v in dg.items()) or "none") + " genes")
    return "\n".join(lines)
