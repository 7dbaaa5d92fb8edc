"""Reading windows ahead in a background thread (``read_ahead``) changes when windows are read, never
what is served: the same batches, the same windows read (none past the epoch's last batch), errors
raised as they were, and no thread left behind when an iteration stops early."""

from __future__ import annotations

import threading

import pytest
import torch

from shards import CellDataLoader, ShardedCellDataset
from shards.errors import ShardError
from shards.loading.readahead import ReadAhead

MODES = {
    "plain": {},
    "sampled": {"num_samples": 900, "replacement": True},
    "grouped": {"group_by": "dataset_id"},
    "token budget": {"token_budget": 4096},
}


def _run(root, read_ahead: int, epoch: int = 1, **kw):
    ds = ShardedCellDataset(
        str(root), batch_size=16, context_length=64, seed=2, return_cell_ids=True, read_ahead=read_ahead, **kw
    )
    reads = []
    window = ds._window
    ds._window = lambda cells, worker, k: (reads.append(k), window(cells, worker, k))[1]
    ds.set_epoch(epoch)
    return list(CellDataLoader(ds, num_workers=0)), reads


@pytest.mark.parametrize("mode", list(MODES))
def test_the_same_batches_and_windows_with_and_without_read_ahead(zarr_set, mode):
    want, want_reads = _run(zarr_set, 0, **MODES[mode])
    assert want
    for depth in (1, 3):
        got, reads = _run(zarr_set, depth, **MODES[mode])
        assert sorted(reads) == sorted(want_reads) == want_reads, (mode, depth)  # each once, none extra
        assert len(got) == len(want)
        for x, y in zip(got, want, strict=True):
            assert x["cell_id"] == y["cell_id"]
            for key in ("input_ids", "labels", "attention_mask", "loss_weight"):
                assert torch.equal(x[key], y[key]), (mode, depth, key)


def test_an_error_while_reading_ahead_is_raised_for_its_window():
    def read(k):
        if k == 2:
            raise ShardError("shard-000002.zarr: broken")
        return k

    with ReadAhead(read, 0, 5, depth=2) as ahead:
        assert [ahead.get(0), ahead.get(1)] == [0, 1]  # window 2 failed in the background meanwhile
        with pytest.raises(ShardError, match="broken"):
            ahead.get(2)


def test_stopping_early_leaves_no_thread(zarr_set):
    ds = ShardedCellDataset(str(zarr_set), batch_size=16, context_length=64, read_ahead=2)
    ds.set_epoch(0)
    it = iter(CellDataLoader(ds, num_workers=0))
    next(it)
    assert any(t.name.startswith("cellshard-read") for t in threading.enumerate())
    it.close()
    del it
    for t in [t for t in threading.enumerate() if t.name.startswith("cellshard-read")]:
        t.join(timeout=10)
        assert not t.is_alive()


def test_read_ahead_is_checked():
    with pytest.raises(ShardError, match="read_ahead=-1"):
        ShardedCellDataset("unused", read_ahead=-1)


@pytest.mark.parametrize("fmt", ["zarr", "webdataset"])
def test_decoding_on_io_threads_reads_the_same_values(zarr_set, wds_set, fmt):
    """``io_threads=2``: Zarr's genes and counts, or a tar run's two halves, decoded at once."""
    from shards.loading.readers import ShardSetReader

    root = zarr_set if fmt == "zarr" else wds_set
    one, two = ShardSetReader(root, io_threads=1), ShardSetReader(root, io_threads=2)
    for i, n in enumerate(one.shard_cells.tolist()):
        for a, b in [(0, n), (1, n // 2), (n // 2, n)]:
            x, y = one.read(i, a, b), two.read(i, a, b)
            assert len(y[0]) > 32_768 or b - a < 64 or fmt == "webdataset"  # the parallel path is taken
            for u, v in zip(x, y, strict=True):
                assert u.dtype == v.dtype and (u == v).all()
    assert two._pool is not None
    a, b = _run(root, 1, io_threads=1)[0], _run(root, 1, io_threads=2)[0]
    assert len(a) == len(b) and all(torch.equal(x["input_ids"], y["input_ids"]) for x, y in zip(a, b, strict=True))
