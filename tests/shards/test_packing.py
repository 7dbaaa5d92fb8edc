"""Sequence packing (``pack: true``): the same cells as unpacked, side by side in rows of the context.

From the user's side: every cell of every batch comes out of a packed batch with exactly its unpacked
tokens, labels, value bins and weight; rows never exceed the context; host and device collate give the
same packed batch bit for bit; the epoch (which cells, in which batches) and so resume are unchanged.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from shards import ShardedCellDataset
from shards.loading.packing import plan_packing


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(3, 64), max_size=80), st.integers(64, 200))
def test_first_fit_decreasing_places_every_cell_once_without_overlap(sizes, capacity):
    plan = plan_packing(np.array(sizes), capacity)
    assert len(plan.row) == len(sizes) and plan.width <= capacity
    used = np.zeros((plan.rows, capacity), dtype=int)
    for r, s, n in zip(plan.row, plan.start, plan.sizes, strict=True):
        used[r, s : s + n] += 1
        assert s + n <= plan.width
    assert used.max(initial=0) <= 1 and used.sum() == sum(sizes)
    # never more token slots than padding the batch to its longest cell
    assert plan.rows * plan.width <= len(sizes) * max(sizes, default=0)
    again = plan_packing(np.array(sizes), capacity)
    assert np.array_equal(again.row, plan.row) and np.array_equal(again.start, plan.start)


def test_a_cell_longer_than_a_row_is_refused():
    with pytest.raises(ValueError, match="does not fit a packed row of 10"):
        plan_packing(np.array([4, 11]), 10)


def _unpack(packed: dict, n_cells: int) -> list[dict]:
    """Each cell's tokens out of a packed batch, by its segment."""
    cells = []
    for i in range(n_cells):
        where = packed["segments"] == i
        cell = {k: packed[k][where] for k in ("input_ids", "labels", "positions", *(["values"] * ("values" in packed)))}
        cells.append(cell)
    return cells


OPTIONS = {
    "plain": {},
    "value bins": {"value_bins": 11},
    "sampled, padded remainder": {"num_samples": 500, "replacement": True, "remainder": "pad"},
}


@pytest.mark.parametrize("options", list(OPTIONS.values()), ids=list(OPTIONS))
def test_packed_batches_hold_exactly_the_unpacked_cells(zarr_set, options):
    kw = {"batch_size": 24, "context_length": 1024, "rank": 0, "world_size": 1, **options}
    plain = list(ShardedCellDataset(zarr_set, **kw))
    packed = list(ShardedCellDataset(zarr_set, pack=True, **kw))
    device = ShardedCellDataset(zarr_set, pack=True, collate_on="device", **kw)
    on_device = [device.device_collator()(b) for b in device]
    assert len(plain) == len(packed) == len(on_device) > 1
    rows = cells = 0
    for a, p, d in zip(plain, packed, on_device, strict=True):
        assert set(d) == set(p) and all(torch.equal(p[k], d[k]) for k in p), "device packing differs from host"
        assert torch.equal(a["loss_weight"], p["loss_weight"])
        n = len(a["loss_weight"])
        assert p["input_ids"].shape[1] <= 1024 and p["input_ids"].shape[0] <= n
        assert torch.equal(p["attention_mask"], p["segments"] >= 0)
        for i, cell in enumerate(_unpack(p, n)):
            real = a["attention_mask"][i]
            assert torch.equal(cell["input_ids"], a["input_ids"][i][real])
            assert torch.equal(cell["labels"], a["labels"][i][real])
            assert torch.equal(cell["positions"], torch.arange(int(real.sum())))
            if "values" in a:
                assert torch.equal(cell["values"], a["values"][i][real])
        rows += p["input_ids"].numel()
        cells += a["input_ids"].numel()
    assert rows < cells  # fewer computed tokens than padded (the synthetic cells vary in length)


def test_packed_epochs_resume_exactly(zarr_set):
    """A loader state taken mid-epoch resumes the packed stream at the next batch (the plan is the
    unpacked one; packing only lays each batch out)."""
    from shards import CellDataLoader

    kw = {"batch_size": 16, "context_length": 96, "pack": True, "rank": 0, "world_size": 1}
    loader = CellDataLoader(ShardedCellDataset(zarr_set, **kw), num_workers=0)
    it = iter(loader)
    for _ in range(3):
        next(it)
    state = loader.state_dict()
    rest = [b["input_ids"] for b in it]
    again = CellDataLoader(ShardedCellDataset(zarr_set, **kw), num_workers=0)
    again.load_state_dict(state)
    resumed = [b["input_ids"] for b in again]
    assert len(rest) == len(resumed) > 0 and all(torch.equal(a, b) for a, b in zip(rest, resumed, strict=True))
