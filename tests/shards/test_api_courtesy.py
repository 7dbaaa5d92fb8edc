"""The Python API's courtesies: ``len()`` of a dataset and a loader (batches per rank this epoch, equal
to what iterating serves, in every batching mode), a useful ``repr``, an inference mode without masks."""

from __future__ import annotations

import numpy as np
import pytest

from shards import CellDataLoader, ShardedCellDataset

MODES = {
    "plain": {},
    "grouped": {"group_by": "dataset_id"},
    "token budget": {"token_budget": 900},
    "sampled": {"num_samples": 500, "replacement": True},
    "pad": {"remainder": "pad"},
}


@pytest.mark.parametrize("mode", MODES, ids=list(MODES))
def test_len_is_what_an_epoch_serves(zarr_set, mode):
    for epoch in (0, 1):
        for rank in (0, 1):
            ds = ShardedCellDataset(zarr_set, batch_size=16, context_length=64, rank=rank, world_size=2, **MODES[mode])
            ds.set_epoch(epoch)
            served = sum(1 for _ in ds)
            assert len(ds) == served > 0
            assert ds.batches_per_rank(num_workers=2) == ds.batches_per_rank(num_workers=2, epoch=epoch)


@pytest.mark.slow
def test_loader_len_with_workers(zarr_set):
    ds = ShardedCellDataset(zarr_set, batch_size=16, context_length=64, rank=0, world_size=1, token_budget=900)
    loader = CellDataLoader(ds, num_workers=2)
    assert len(loader) == sum(1 for _ in loader)
    with pytest.raises(TypeError, match="unsized"):
        len(CellDataLoader(ds, sized=False))


def test_repr_names_the_set_and_the_batching(zarr_set):
    ds = ShardedCellDataset(zarr_set, batch_size=16, context_length=64, rank=0, world_size=1, value_bins=51)
    text = repr(ds)
    assert text.startswith(f"ShardedCellDataset({str(zarr_set)!r}, split='train', cells=")
    assert "batch_size=16, context_length=64" in text and "value_bins=51" in text and "rank=0/1" in text


def test_inference_mode_gives_tokens_as_stored(zarr_set):
    opts = {"batch_size": 16, "context_length": 64, "rank": 0, "world_size": 1}
    masked = next(iter(ShardedCellDataset(zarr_set, **opts)))
    plain = next(iter(ShardedCellDataset(zarr_set, masking=False, **opts)))
    assert (plain["labels"] == -100).all() and (masked["labels"] != -100).any()
    # the masked batch's inputs are the plain ones except where a label is set
    off = masked["labels"] == -100
    assert np.array_equal(masked["input_ids"][off].numpy(), plain["input_ids"][off].numpy())
    assert np.array_equal(masked["attention_mask"].numpy(), plain["attention_mask"].numpy())
