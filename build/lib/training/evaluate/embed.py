"""Cell embeddings from a trained encoder: CLS or mean-pooled hidden states, read in shard order.

Inputs are not masked (the Collator's ``masking=False``) and every cell of the split is read once,
shard by shard, with the reader's vectorized range reads.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator

import numpy as np
import pandas as pd
import torch

from shards import Collator
from shards.loading.readers import ShardSetReader

from ..model import CellEncoder
from ..model.encoder import mean_pool
from .defaults import DEFAULT_POOLING

__all__ = ["DEFAULT_POOLING", "cell_batches", "embed_cells", "pool"]


def cell_batches(
    reader: ShardSetReader, collator: Collator, batch_size: int, limit: int | None = None
) -> Iterator[tuple[dict[str, torch.Tensor], np.ndarray]]:
    """(unmasked batch, cell ids) over the split's shards in order, at most ``limit`` cells."""
    left = limit if limit is not None else int(reader.shard_cells.sum())
    for i, n in enumerate(reader.shard_cells.tolist()):
        for start in range(0, n, batch_size):
            if left <= 0:
                return
            stop = min(n, start + batch_size, start + left)
            genes, counts, offsets, ids = reader.read(i, start, stop)
            yield collator(genes, offsets, ids, np.zeros(len(ids), bool), 0, counts=counts), ids
            left -= stop - start


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, how: str) -> torch.Tensor:
    """``cls``: the ``<cls>`` position; ``mean``: the mean over gene positions (not specials, not pads)."""
    if how == "cls":
        return hidden[:, 0]
    if how != "mean":
        raise ValueError(f"pooling {how!r}: use cls or mean")
    return mean_pool(hidden, attention_mask)


@torch.no_grad()
def embed_cells(
    model: CellEncoder,
    reader: ShardSetReader,
    *,
    context_length: int,
    pooling: str = DEFAULT_POOLING,
    batch_size: int = 64,
    limit: int | None = None,
    value_bins: int = 0,
    device: str | torch.device = "cpu",
    progress: str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(cell ids, float32 embeddings) of the split's cells; ``progress``: a bar on stderr with this label."""
    from tqdm import tqdm

    total = int(reader.shard_cells.sum()) if limit is None else min(limit, int(reader.shard_cells.sum()))
    bar = tqdm(total=total, unit="cell", desc=progress, disable=progress is None, file=sys.stderr)
    collator = Collator(reader.vocab(), context_length, 0, value_bins=value_bins, masking=False)
    was = model.training
    model.eval()
    ids, out = [], []
    for batch, cell_ids in cell_batches(reader, collator, batch_size, limit):
        mask = batch["attention_mask"].to(device)
        values = batch["values"].to(device) if "values" in batch else None
        hidden = model.encode(batch["input_ids"].to(device), mask, values)
        out.append(pool(hidden.float(), mask, pooling).cpu().numpy())
        ids.append(cell_ids)
        bar.update(len(cell_ids))
    bar.close()
    model.train(was)
    d = model.cfg.d_model
    return (
        np.concatenate(ids) if ids else np.zeros(0, object),
        np.concatenate(out) if out else np.zeros((0, d), np.float32),
    )


def cell_metadata(reader: ShardSetReader, ids: np.ndarray) -> pd.DataFrame:
    """The metadata rows of ``ids`` (in that order), indexed by cell id."""
    need = len(ids)
    tables, seen = [], 0
    for i in range(len(reader.shards)):
        if seen >= need:
            break
        t = reader.metadata(i)
        tables.append(t)
        seen += len(t)
    meta = pd.concat(tables, ignore_index=True).set_index("cell_id")
    return meta.loc[list(ids)]
