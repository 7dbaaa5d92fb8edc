"""The comparison every report prints: a run's embedding against PCA-50 and an untrained encoder, on the
same held-out cells, split by donor (``compare``). Reads the cells once for the counts (PCA) and embeds
them twice (the trained and the untrained encoder of the same shape, seeded)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from shards.loading.readers import ShardSetReader

from ..checkpoints import load_model
from ..model import CellEncoder
from .compare import compare, log1p_cp10k_pca
from .embed import cell_metadata, embed_cells

__all__ = ["evidence", "read_counts"]


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


def evidence(
    ckpt: str | Path,
    data: str,
    split: str = "val",
    label: str = "cell_type",
    *,
    pooling: str = "cls",
    limit: int = 4000,
    seed: int = 0,
    donor_column: str = "donor_id",
) -> dict[str, Any]:
    """``compare`` of the checkpoint's embedding, an untrained encoder's and PCA-50 of log1p-CP10k on
    the first ``limit`` cells of ``split``, labelled by ``label``, split by ``donor_column``."""
    model, _ = load_model(ckpt)
    reader = ShardSetReader(data, split)
    n = model.cfg.max_positions
    opts = {"context_length": n, "pooling": pooling, "limit": limit, "value_bins": model.cfg.value_bins}
    ids, trained = embed_cells(model, reader, **opts)
    torch.manual_seed(seed)
    _, untrained = embed_cells(CellEncoder(model.cfg), reader, **opts)
    genes, counts, offsets, read_ids = read_counts(reader, limit)
    if not np.array_equal(read_ids, ids):
        raise RuntimeError("the counts were read in another order than the embeddings")
    pca = log1p_cp10k_pca(genes, counts, offsets, reader.vocab().size, seed=seed)
    meta = cell_metadata(reader, ids)
    for column in (label, donor_column):
        if column not in meta.columns:
            raise ValueError(f"{column!r} is not stored with the cells (columns: {', '.join(meta.columns)})")
    result = compare(
        {"pretrained": trained, "untrained": untrained, "pca50": pca},
        meta[label].to_numpy(),
        meta[donor_column].to_numpy(),
        seed,
    )
    return {"label": label, "pooling": pooling, **result}
