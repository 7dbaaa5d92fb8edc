"""The frequency-only baseline of masked gene modelling.

It predicts every masked gene from corpus gene frequencies alone: p(gene) is the gene's share of the
tokens that fit in the context over the training split, and its loss is the mean of -log p(target)
over the validation split's masked tokens (the same masks and weights the model is scored on). A
model that reads no context cannot do better on average, so beating it shows the model uses context.
"""

from __future__ import annotations

import numpy as np

from shards import ShardedCellDataset
from shards.loading.readers import ShardSetReader

__all__ = ["frequency_baseline"]


def frequency_baseline(
    path: str,
    *,
    context_length: int,
    seed: int = 0,
    train_split: str = "train",
    val_split: str = "val",
    batch_size: int = 256,
    max_batches: int | None = None,
    max_train_cells: int | None = None,
) -> float:
    """The frequency-only loss on ``val_split``; ``max_train_cells``/``max_batches`` make it an estimate
    from the first shards and batches (a build shuffles cells globally, so the first shards are a random
    sample), for a summary that must not read an atlas."""
    reader = ShardSetReader(path, train_split)
    size = reader.vocab().size
    counts = np.zeros(size, dtype=np.float64)
    keep = context_length - 2
    seen = 0
    for i, n in enumerate(reader.shard_cells.tolist()):
        if max_train_cells is not None and seen >= max_train_cells:
            break
        seen += n
        genes, _, offsets, _ = reader.read(i, 0, n)
        lengths = np.minimum(np.diff(offsets), keep)
        within = np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        counts += np.bincount(genes[np.repeat(offsets[:-1], lengths) + within], minlength=size)
    logp = np.log(np.maximum(counts, 0.5) / counts.sum())  # unseen genes: half a count
    val = ShardedCellDataset(
        path,
        batch_size=batch_size,
        context_length=context_length,
        split=val_split,
        seed=seed,
        remainder="pad",
        rank=0,
        world_size=1,
    )
    total = weight = 0.0
    for k, batch in enumerate(val):
        if max_batches is not None and k >= max_batches:
            break
        labels = batch["labels"].numpy()
        rows, cols = np.nonzero(labels >= 0)
        w = batch["loss_weight"].numpy()[rows]
        total += float((-logp[labels[rows, cols]] * w).sum())
        weight += float(w.sum())
    return total / max(weight, 1.0)
