"""Device-side collate (``collate_on="device"``) builds the host collator's batches bit for bit.

Two levels: random ragged batches (the same generator as the kernel's test: truncation, ties in the
counts, empty cells, padded repeats, copies of a cell) through ``DeviceCollator`` against
``Collator``; and whole epochs of a real shard set through ``ShardedCellDataset`` in both modes
(plain, value bins, a gene panel, sampled with replacement, padded remainder). Here the device is the
CPU: the code path is the one a GPU runs (torch ops on the buffer's device). Training with both
modes is compared step for step in ``tests/training/test_exact_resume.py``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from shards import ShardedCellDataset
from shards.loading.collate import Collator
from shards.loading.device import DeviceCollator, is_ragged, pack_ragged
from shards.loading.hashing import cell_hashes, salted
from tests.shards.test_collate_kernel import _batch, _vocab


@pytest.mark.parametrize("trial", range(12))
def test_random_batches_equal_the_host_collator(trial):
    rng = np.random.default_rng(100 + trial)
    vocab = _vocab(scconcept=trial % 2 == 1)
    genes, offsets, ids, pads, counts, copies = _batch(rng, int(rng.integers(1, 40)), vocab, long=trial % 3 == 0)
    for context in (3, 9, 64, 2048):
        for bins in (0, 2, 51):
            for masking in (True, False):
                host_collate = Collator(vocab, context, int(rng.integers(1000)), value_bins=bins, masking=masking)
                epoch = int(rng.integers(10))
                host = host_collate(genes, offsets, ids, pads, epoch, counts=counts, copies=copies)
                cells = salted(cell_hashes(ids), copies)
                ragged = pack_ragged(
                    genes, offsets, cells, pads, counts if bins else None, epoch=epoch, context_length=context
                )
                device = DeviceCollator.like(host_collate)(ragged)
                assert set(device) == set(host)
                for key in host:
                    assert host[key].dtype == device[key].dtype, key
                    assert torch.equal(host[key], device[key]), (context, bins, masking, key)


def test_a_ragged_batch_is_one_buffer_of_a_quarter_of_the_bytes(zarr_set):
    host = ShardedCellDataset(zarr_set, batch_size=16, context_length=2048, rank=0, world_size=1)
    ragged = ShardedCellDataset(zarr_set, batch_size=16, context_length=2048, collate_on="device", rank=0, world_size=1)
    a, b = next(iter(host)), next(iter(ragged))
    assert is_ragged(b) and not is_ragged(a)
    tensors = [v for v in b.values() if isinstance(v, torch.Tensor)]
    assert len(tensors) == 1 and tensors[0].dtype == torch.uint8
    padded = sum(v.numel() * v.element_size() for v in a.values())
    assert tensors[0].numel() < padded / 3, (tensors[0].numel(), padded)


MODES = {
    "plain": {},
    "value bins": {"value_bins": 11},
    "panel": {"panels": {"random_genes": 300}},
    "sampled with replacement": {"num_samples": 900, "replacement": True},
    "padded remainder, cell ids": {"remainder": "pad", "return_cell_ids": True},
}


@pytest.mark.parametrize("mode", list(MODES))
def test_an_epoch_through_the_dataset_is_the_same_in_both_modes(zarr_set, mode):
    options = {"batch_size": 24, "context_length": 48, "seed": 7, **MODES[mode]}
    host = ShardedCellDataset(zarr_set, rank=0, world_size=1, **options)
    ragged = ShardedCellDataset(zarr_set, rank=0, world_size=1, collate_on="device", **options)
    collate = ragged.device_collator()
    for epoch in (0, 3):
        host.set_epoch(epoch)
        ragged.set_epoch(epoch)
        n = 0
        for a, r in zip(host, ragged, strict=True):
            b = collate(r)
            assert set(a) == set(b)
            for key, value in a.items():
                if isinstance(value, torch.Tensor):
                    assert torch.equal(value, b[key]), (mode, epoch, n, key)
                else:
                    assert value == b[key]
            n += 1
        assert n > 3
