"""How much of a training step's compute is spent on pads: plain, token-budget and packed batches.

For each model of ``train.MODELS`` (geneformer-10m at context 2,048, geneformer-106m at 4,096, their
per-GPU batch sizes) and each depth distribution, an epoch's batches are laid out exactly as the loader
lays them out (the same planners: ``batch_size`` cells in epoch order; ``shards.plan.budget`` for
``token_budget``; ``shards.loading.packing.plan_packing`` for ``pack``), and counted:

- ``padding_frac``: the share of computed token slots that hold no token (``perf/padding_frac``);
- ``pad_flops_frac``: the share of training FLOPs (``training.model.flops.train_flops``: rows x width,
  attention over the whole row as SDPA computes it with a mask) not spent on each cell's own tokens,
  where a cell alone costs ``train_flops`` of one row of its own length;
- ``flops_per_real_token``: computed FLOPs over real tokens, and its ratio to the padded plain batches.

``pack`` counts attention over whole rows (what SDPA computes with the block-diagonal mask:
``model.attention: sdpa``); ``pack-blocks`` counts each cell's own block only (``model.attention: flex``,
whose 128-token blocks compute a little more: a lower bound).

Depth distributions: ``atlas`` — the genes per cell of a shard set (``--data``, e.g. the realistic
atlas of ``ingest synth --profile atlas``); ``census-like`` — genes per cell drawn per assay from
``CENSUS_LIKE`` (log-normal around a median per assay, mixed by share of cells). Those medians and
shares are assumptions in the range published QC reports for each technology, NOT read from the Census
here (no network): with the Census at hand, replace them with the quantiles of ``obs.nnz`` by assay.
Every cell is cut to the context (``<cls>`` and ``<eos>`` included), as the collator cuts it.
"""

from __future__ import annotations

import numpy as np

from shards.loading.packing import plan_packing
from shards.plan.budget import budget_batches
from training.model import EncoderConfig
from training.model.flops import train_flops

from .report import Result

__all__ = ["CENSUS_LIKE", "census_like_lengths", "measure", "run"]

#: assay -> (share of cells, median genes per cell, log-sd): ASSUMED, see the module docstring
CENSUS_LIKE: dict[str, tuple[float, float, float]] = {
    "10x 3' v3": (0.45, 2200.0, 0.55),
    "10x 3' v2": (0.20, 1100.0, 0.50),
    "10x 5' v1/v2": (0.12, 1500.0, 0.50),
    "10x multiome (nuclei)": (0.08, 1800.0, 0.60),
    "sci-RNA-seq3": (0.08, 500.0, 0.60),
    "Drop-seq / Seq-Well": (0.05, 800.0, 0.55),
    "Smart-seq2": (0.02, 4000.0, 0.40),
}
MASK = 0.15
#: plain: batch_size cells; budget: token_budget = batch_size x context; pack: rows of the context,
#: attention over the whole row (SDPA with a block-diagonal mask); pack-blocks: the same rows, attention
#: FLOPs of each cell's own block only (model.attention: flex, at block granularity 0)
BATCHINGS = ("plain", "budget", "pack", "pack-blocks")


def census_like_lengths(n: int, seed: int = 0) -> np.ndarray:
    """Genes per cell of ``n`` cells drawn from ``CENSUS_LIKE`` (shuffled: the epoch's order)."""
    rng = np.random.default_rng(seed)
    shares = np.array([s for s, _, _ in CENSUS_LIKE.values()])
    assay = rng.choice(len(shares), size=n, p=shares / shares.sum())
    medians = np.array([m for _, m, _ in CENSUS_LIKE.values()])[assay]
    sds = np.array([s for _, _, s in CENSUS_LIKE.values()])[assay]
    return np.maximum(1, np.round(np.exp(rng.normal(np.log(medians), sds)))).astype(np.int64)


def _cell_flops(cfg: EncoderConfig, sizes: np.ndarray, masked: np.ndarray) -> float:
    """FLOPs of each cell alone, as one row of its own length (what no pad costs)."""
    d, f = cfg.d_model, cfg.ffn
    layer = sizes * 2 * (4 * d * d + 2 * d * f) + 4 * sizes.astype(float) ** 2 * d
    head = (masked + (1 if cfg.cell_head else 0)) * (2 * d * d + 2 * d * cfg.vocab_size)
    return float(3.0 * (cfg.n_layers * layer + head).sum())


def measure(cfg: EncoderConfig, genes: np.ndarray, batch: int, context: int, how: str) -> dict[str, float]:
    """Tokens and FLOPs of an epoch of cells with ``genes`` genes each, batched ``how`` (``BATCHINGS``)."""
    sizes = np.minimum(genes, context - 2) + 2
    masked = np.maximum(1, np.round(MASK * (sizes - 2))).astype(np.int64)
    if how == "budget":
        ends = budget_batches(sizes, batch * context)
    else:
        ends = np.arange(batch, len(sizes) + 1, batch)  # full batches (remainder dropped)
    slots = computed = 0.0
    used = 0
    start = 0
    for end in ends.tolist():
        s, m = sizes[start:end], masked[start:end]
        if how.startswith("pack"):
            plan = plan_packing(s, context)
            rows, width = plan.rows, plan.width
        else:
            rows, width = len(s), int(s.max())
        slots += rows * width
        computed += train_flops(cfg, rows, width, int(m.sum()), cells=len(s))
        if how == "pack-blocks":  # attention within each cell only (a block-sparse kernel's FLOPs)
            dense = 3.0 * cfg.n_layers * 4 * rows * width * width * cfg.d_model
            computed += 3.0 * cfg.n_layers * 4 * float((s.astype(float) ** 2).sum()) * cfg.d_model - dense
        used, start = end, end
    real = float(sizes[:used].sum())
    useful = _cell_flops(cfg, sizes[:used], masked[:used])
    return {
        "padding_frac": 1.0 - real / slots,
        "pad_flops_frac": 1.0 - useful / computed,
        "flops_per_real_token": computed / real,
        "batches": float(len(ends)),
        "cells": float(used),
        "mean_genes": float(genes.mean()),
    }


def atlas_lengths(data: str) -> np.ndarray:
    """Genes per cell of a shard set's train split, in a shuffled order (seed 0)."""
    from shards.loading.readers import ShardSetReader

    reader = ShardSetReader(data, "train")
    tokens = np.concatenate([reader.cell_tokens(i) for i in range(len(reader.shards))]).astype(np.int64)
    return np.random.default_rng(0).permutation(tokens)


def run(data: str | None, cells: int = 200_000, vocab: int = 25_000) -> list[Result]:
    """Every model x distribution x batching; ``data``: the atlas shard set (None: census-like only)."""
    from .train import MODELS

    dists = {"census-like": census_like_lengths(cells)}
    if data is not None:
        dists["atlas"] = atlas_lengths(data)
    results = []
    for model, (arch, batch, context) in MODELS.items():
        cfg = EncoderConfig(vocab_size=vocab, max_positions=context, **arch)
        for dist, genes in dists.items():
            plain = None
            for how in BATCHINGS:
                r = measure(cfg, genes, batch, context, how)
                plain = plain or r["flops_per_real_token"]
                conf = {"model": model, "batch_size": batch, "context_length": context, "depth": dist, "batching": how}
                conf |= {"cells": int(r["cells"]), "mean_genes": round(r["mean_genes"], 1)}
                name = f"padding {model}, {dist}, {how}"
                results.append(Result("padding", name, "padding_frac", r["padding_frac"], "share", conf))
                results.append(Result("padding", name, "pad_flops_frac", r["pad_flops_frac"], "share", conf))
                results.append(Result("padding", name, "flops_per_real_token", r["flops_per_real_token"], "FLOP", conf))
                ratio = r["flops_per_real_token"] / plain
                results.append(Result("padding", name, "flops_per_real_token_vs_plain", ratio, "ratio", conf))
    return results


NOTES = [
    "census-like depths are ASSUMED per-assay medians and shares (benchmarks/padding.py CENSUS_LIKE), not read "
    "from the Census (no network here); atlas depths are the shard set's own.",
    "pack counts attention over whole rows (model.attention sdpa: the block-diagonal mask); pack-blocks counts "
    "each cell's own attention only (model.attention flex, at block granularity 0: a lower bound of its FLOPs).",
    "packing never computes more token slots than padding, but with sdpa it can compute more FLOPs: its rows are "
    "wider than the padded batch's, and attention grows with the width squared.",
    "FLOPs are the formula of training.model.flops (matmuls; a test checks it against torch's FlopCounterMode), "
    "not a GPU measurement.",
]


def ratios(results: list[Result]) -> list[tuple[str, float, str]]:
    """Computed FLOPs per real token, packed over plain, per model and depth distribution."""
    get = {(r.name, r.metric): r.value for r in results}
    out = []
    for r in results:
        if r.metric == "flops_per_real_token_vs_plain" and r.config["batching"] in ("pack", "pack-blocks", "budget"):
            label = f"{r.config['model']}, {r.config['depth']}: FLOPs per real token, {r.config['batching']} / plain"
            out.append((label, get[(r.name, r.metric)], "< 1"))
    return out
