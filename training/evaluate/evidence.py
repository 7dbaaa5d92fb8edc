"""The comparison every report prints: a run's embedding against PCA-50 and an untrained encoder, on the
same held-out cells, split by donor (``compare``). Reads the cells once for the counts (PCA) and embeds
them twice (the trained and the untrained encoder of the same shape, seeded)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from shards.loading.readers import ShardSetReader

from ..checkpoints import load_model
from ..model import CellEncoder
from .compare import compare, log1p_cp10k_pca
from .embed import DEFAULT_POOLING, cell_metadata, embed_cells

__all__ = ["Baselines", "evidence", "read_counts"]


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


class Baselines:
    """PCA-50 of log1p-CP10k and an untrained encoder of ``cfg``'s shape on the first ``limit`` cells of a
    split, with their labels and donors: computed once, then any number of embeddings compared to them
    (the ``LinearProbe`` callback compares the model as it trains)."""

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
        device: str | torch.device = "cpu",
    ) -> None:
        self.reader, self.label, self.pooling, self.seed = reader, label, pooling, seed
        self.opts = {"context_length": cfg.max_positions, "pooling": pooling, "limit": limit}
        self.opts |= {"value_bins": cfg.value_bins, "device": device}
        genes, counts, offsets, self.ids = read_counts(reader, limit)
        meta = cell_metadata(reader, self.ids)
        for column in (label, donor_column):
            if column not in meta.columns:
                raise ValueError(f"{column!r} is not stored with the cells (columns: {', '.join(meta.columns)})")
        self.labels, self.donors = meta[label].to_numpy(), meta[donor_column].to_numpy()
        self.pca = log1p_cp10k_pca(genes, counts, offsets, reader.vocab().size, seed=seed)
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            untrained = CellEncoder(cfg).to(device)
        _, self.untrained = self.embed(untrained)

    def embed(self, model: CellEncoder) -> tuple[np.ndarray, np.ndarray]:
        ids, x = embed_cells(model, self.reader, **self.opts)
        if not np.array_equal(ids, self.ids):
            raise RuntimeError("the cells were embedded in another order than they were read")
        return ids, x

    def compare(self, model: CellEncoder, embedded: Any = None) -> dict[str, Any]:
        """``compare`` of ``model``'s embedding with the two baselines, on the same cells and donor split.
        ``embedded``: an AnnData of the model's embeddings indexed by cell id (``embed``'s output); when it
        holds every cell here, its rows are used instead of embedding the cells again."""
        if embedded is not None and pd.Index(self.ids.astype(str)).isin(embedded.obs_names).all():
            x = np.asarray(embedded[self.ids.astype(str)].obsm["X_cellshard"])
        else:
            _, x = self.embed(model)
        result = compare(
            {"pretrained": x, "untrained": self.untrained, "pca50": self.pca}, self.labels, self.donors, self.seed
        )
        return {"label": self.label, "pooling": self.pooling, **result}


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
    embedded: Any = None,
) -> dict[str, Any]:
    """``compare`` of the checkpoint's embedding, an untrained encoder's and PCA-50 of log1p-CP10k on
    the first ``limit`` cells of ``split``, labelled by ``label``, split by ``donor_column``
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
    )
    return baselines.compare(model, embedded)
