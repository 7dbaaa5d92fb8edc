"""Worker batches travel through reused shared-memory slots (``shards.loading.transport``): a slot is
free again only when the last tensor of its batch is gone, a consumer that keeps every batch still gets
intact batches, and what arrives equals what torch's own worker transport delivers."""

from __future__ import annotations

import gc

import numpy as np
import pytest
import torch
from torchdata.stateful_dataloader import StatefulDataLoader

import shards.loading.loader as loader_module
from shards import CellDataLoader, ShardedCellDataset
from shards.loading.collate import Collator
from shards.loading.transport import BufferedBatch, SlotRing, materialize, release_token
from tests.shards.test_collate_kernel import _batch, _vocab


def _collated(ring: SlotRing, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    genes, offsets, ids, pads, counts, _ = _batch(rng, 8, _vocab(200), long=False)
    batch = Collator(_vocab(200), 32, seed)(genes, offsets, ids, pads, 0, counts=counts, alloc=ring.alloc)
    batch["cell_id"] = ids.tolist()
    return batch


def test_a_slot_is_reused_only_after_every_tensor_of_its_batch_is_gone():
    ring = SlotRing(token=10_001, max_slots=2)
    try:
        reference = _collated(SlotRing(token=10_002, max_slots=1), 1)
        sent = ring.wrap(_collated(ring, 1))
        assert isinstance(sent, BufferedBatch) and sent.attach is not None and sent.slot == 0
        got = materialize(sent)
        assert got["cell_id"] == reference["cell_id"]
        for key in ("input_ids", "attention_mask", "labels", "loss_weight"):
            assert torch.equal(got[key], reference[key]), key
        kept = got["input_ids"][1:3, :5]  # a view of a view outlives the batch dict
        del got
        gc.collect()
        assert ring.flags[0] == 1, "the slot was freed while a view of its batch was alive"
        second = ring.wrap(_collated(ring, 2))
        assert second.slot == 1 and second.attach is not None  # slot 0 is still held
        third = ring.wrap(_collated(ring, 3))
        assert not isinstance(third, BufferedBatch)  # no free slot: an ordinary batch, no waiting
        before = kept.clone()
        del kept
        gc.collect()
        assert ring.flags[0] == 0
        fourth = ring.wrap(_collated(ring, 4))
        assert fourth.slot == 0 and fourth.attach is None  # reused; its storage travelled once
        assert torch.equal(materialize(fourth)["input_ids"], _collated(SlotRing(10_003, 1), 4)["input_ids"])
        assert before.shape == (2, 5)
        materialize(second)
    finally:
        release_token(10_001)


def _ordinary(root, epoch: int, **options) -> list[dict]:
    """The same epoch through torch's own worker transport (the plan depends on the worker count)."""
    ds = ShardedCellDataset(root, rank=0, world_size=1, **options)
    ds.set_epoch(epoch)
    return list(StatefulDataLoader(ds, batch_size=None, num_workers=2, multiprocessing_context="spawn"))


@pytest.mark.slow
@pytest.mark.parametrize("collate_on", ["host", "device"])
def test_worker_batches_are_the_ordinary_ones_whether_kept_or_dropped(zarr_set, monkeypatch, collate_on):
    options = {"batch_size": 16, "context_length": 64, "seed": 3, "return_cell_ids": True, "collate_on": collate_on}
    received = []
    monkeypatch.setattr(loader_module, "materialize", lambda b: received.append(b.attach is not None) or materialize(b))
    ds = ShardedCellDataset(zarr_set, rank=0, world_size=1, **options)
    loader = CellDataLoader(ds, num_workers=2, persistent_workers=True)
    try:
        # epoch 0: each batch is checked and dropped, so slots are reused
        expected = _ordinary(zarr_set, 0, **options)
        ds.set_epoch(0)
        n = 0
        for batch, want in zip(loader, expected, strict=True):
            _same(batch, want)
            n += 1
        assert n == len(expected) > 20
        assert len(received) == n and sum(received) <= 2 * 5, received  # slots travelled once each
        # epoch 1: the consumer keeps every batch: later batches must not overwrite earlier ones
        expected = _ordinary(zarr_set, 1, **options)
        ds.set_epoch(1)
        kept = list(loader)
        for batch, want in zip(kept, expected, strict=True):
            _same(batch, want)
    finally:
        loader.shutdown_workers()


def _same(a: dict, b: dict) -> None:
    assert set(a) == set(b)
    for key, value in a.items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(value, b[key]), key
        else:  # torch's default_convert turns tuples (a ragged batch's layout) into lists
            assert _lists(value) == _lists(b[key]), key


def _lists(value):
    return [_lists(v) for v in value] if isinstance(value, tuple | list) else value
