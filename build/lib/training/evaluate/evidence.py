"""The comparison every report prints: a run's embedding against the field's standard PCA-50 (scanpy's
default pipeline), PCA-50 of all genes, an untrained encoder of the same shape (seeded) and, when
scvi-tools is installed, scVI, on the same held-out cells, split by donor (or another grouping column)
over several splits (``compare``). Reads the cells once for the counts and embeds them twice (the
trained and the untrained encoder)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from shards.loading.readers import ShardSetReader

from ..checkpoints import load_model
from ..model import CellEncoder
from .compare import SPLIT_SEEDS, compare, log1p_cp10k_pca, scanpy_standard_pca, scvi_latent
from .embed import DEFAULT_POOLING, cell_metadata, embed_cells

__all__ = ["Baselines", "default_group_column", "evidence", "read_counts"]


def read_counts(reader: ShardSetReader, limit: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(genes, counts, offsets, ids)`` of the split's first ``limit`` cells, in shard order (the order
    ``embed_cells`` embeds them in)."""
    parts, left = [], limit
    for i, n in enumerate(reader.shard_cells.tolist()):
        if left <= 0:
            break
        parts.append(reader.read(i, 0, min(n, left)))
        left -= min(n, left)
    genes = np.concatenate([p[0] for p in parts])
    counts = np.concatenate([p[1] for p in parts])
    lengths = np.concatenate([np.diff(p[2]) for p in parts])
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    return genes, counts, offsets, np.concatenate([p[3] for p in parts])


def default_group_column(donors: int, columns: Any, split_by: str | None = None) -> str:
    """The grouping column of a held-out split: ``donor_id`` when the cells name more than one donor
    (``donors``), else the column the shard set was split by (ingest keeps it with the cells)."""
    if donors > 1 or not split_by or split_by not in list(columns):
        return "donor_id"
    return split_by


class Baselines:
    """The baselines of ``compare`` on the first ``limit`` cells of a split, with their labels and groups:
    computed once, then any number of embeddings compared to them (the ``LinearProbe`` callback compares
    the model as it trains). ``scvi``: also fit scVI when scvi-tools is installed (``None``: when it is)."""

    def __init__(
        self,
        reader: ShardSetReader,
        cfg: Any,
        label: str,
        *,
        pooling: str = DEFAULT_POOLING,
        limit: int = 4000,
        seed: int = 0,
        donor_column: str = "donor_id",
        split_seeds: tuple[int, ...] | None = None,
        scvi: bool | None = None,
        device: str | torch.device = "cpu",
    ) -> None:
        self.reader, self.label, self.pooling, self.seed = reader, label, pooling, seed
        self.group_by = donor_column
        self.split_seeds = tuple(split_seeds) if split_seeds else (seed,)
        self.opts = {"context_length": cfg.max_positions, "pooling": pooling, "limit": limit}
        self.opts |= {"value_bins": cfg.value_bins, "device": device}
        genes, counts, offsets, self.ids = read_counts(reader, limit)
        meta = cell_metadata(reader, self.ids)
        for column, option in ((label, "--label"), (donor_column, "--group-by")):
            if column not in meta.columns:
                raise ValueError(
                    f"{option} {column}: not stored with the cells (columns: {', '.join(meta.columns)}); "
                    "keep it at ingest with --obs-columns"
                )
        self.labels, self.donors = meta[label].to_numpy(), meta[donor_column].to_numpy()
        n_genes = reader.vocab().size
        self.rows: dict[str, np.ndarray] = {
            "pca50": scanpy_standard_pca(genes, counts, offsets, n_genes, seed=seed),
            "pca50_all": log1p_cp10k_pca(genes, counts, offsets, n_genes, seed=seed),
        }
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            untrained = CellEncoder(cfg).to(device)
        _, self.rows["untrained"] = self.embed(untrained)
        #: baselines not computed, with why
        self.skipped: dict[str, str] = {}
        if scvi is False:
            self.skipped["scvi"] = "--scvi false"
        else:
            batch = meta["dataset_id"].to_numpy() if "dataset_id" in meta.columns else None
            with torch.random.fork_rng():
                latent = scvi_latent(genes, counts, offsets, n_genes, batch=batch, seed=seed)
            if latent is not None:
                self.rows["scvi"] = latent
            else:
                self.skipped["scvi"] = "scvi-tools is not installed: pip install 'cellshard[eval]'"

    @property
    def untrained(self) -> np.ndarray:
        return self.rows["untrained"]

    def embed(self, model: CellEncoder) -> tuple[np.ndarray, np.ndarray]:
        ids, x = embed_cells(model, self.reader, **self.opts)
        if not np.array_equal(ids, self.ids):
            raise RuntimeError("the cells were embedded in another order than they were read")
        return ids, x

    def compare(self, model: CellEncoder, embedded: Any = None) -> dict[str, Any]:
        """``compare`` of ``model``'s embedding with the baselines, on the same cells and donor splits.
        ``embedded``: an AnnData of the model's embeddings indexed by cell id (``embed``'s output); when it
        holds every cell here, its rows are used instead of embedding the cells again."""
        if embedded is not None and pd.Index(self.ids.astype(str)).isin(embedded.obs_names).all():
            x = np.asarray(embedded[self.ids.astype(str)].obsm["X_cellshard"])
        else:
            _, x = self.embed(model)
        result = compare(
            {"pretrained": x, **self.rows},
            self.labels,
            self.donors,
            self.seed,
            split_seeds=self.split_seeds,
            group_by=self.group_by,
        )
        return {"label": self.label, "pooling": self.pooling, **result, "skipped": dict(self.skipped)}


def evidence(
    ckpt: str | Path,
    data: str,
    split: str = "val",
    label: str = "cell_type",
    *,
    pooling: str = DEFAULT_POOLING,
    limit: int = 4000,
    seed: int = 0,
    donor_column: str = "donor_id",
    split_seeds: tuple[int, ...] = SPLIT_SEEDS,
    scvi: bool | None = None,
    embedded: Any = None,
) -> dict[str, Any]:
    """``compare`` of the checkpoint's embedding with the baselines (``Baselines``) on the first ``limit``
    cells of ``split``, labelled by ``label``, split by ``donor_column`` over ``split_seeds``
    (``embedded``: the checkpoint's embeddings already computed, see ``Baselines.compare``)."""
    model, _ = load_model(ckpt)
    baselines = Baselines(
        ShardSetReader(data, split),
        model.cfg,
        label,
        pooling=pooling,
        limit=limit,
        seed=seed,
        donor_column=donor_column,
        split_seeds=split_seeds,
        scvi=scvi,
    )
    return baselines.compare(model, embedded)
