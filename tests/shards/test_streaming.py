"""ShardedCellDataset under torchdata's StatefulDataLoader: coverage, masking, exact resume, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchdata.stateful_dataloader import StatefulDataLoader

from shards import ShardError, load_manifest, read_vocab
from shards.loading.collate import Collator
from shards.loading.dataset import ShardedCellDataset


def _ds(root, **kw):
    opts = {"batch_size": 16, "context_length": 128, "seed": 5, "rank": 0, "world_size": 1, "return_cell_ids": True}
    return ShardedCellDataset(root, **{**opts, **kw})


def _loader(ds, workers, persistent=False):
    return StatefulDataLoader(
        ds,
        batch_size=None,
        num_workers=workers,
        persistent_workers=persistent and workers > 0,
        multiprocessing_context="spawn" if workers else None,
    )


def _epochs(loader, ds, epochs):
    out = []
    for e in epochs:
        ds.set_epoch(e)
        out.append(list(loader))
    return out


def _rest_of_two_epochs(ds, loader, epoch):
    """Everything a resumed loader yields until the end of epoch 1."""
    rest = list(loader)
    if epoch == 0:
        ds.set_epoch(1)
        rest += list(loader)
    return rest


def _same(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x["cell_id"] == y["cell_id"]
        for key in ("input_ids", "attention_mask", "labels", "loss_weight"):
            assert torch.equal(x[key], y[key]), key


def test_collate_layout_and_masking_is_per_cell(zarr_set):
    vocab = read_vocab(zarr_set / "vocab.csv")
    col = Collator(vocab, context_length=8, seed=1)
    genes = np.arange(10, 40, dtype=np.int32)
    offsets = np.array([0, 3, 30])  # a short cell and one truncated to 6 genes
    ids = np.array(["a:1", "b:2"], dtype=object)
    out = col(genes, offsets, ids, np.array([False, True]), epoch=0)
    x, lab = out["input_ids"], out["labels"]
    assert x.shape == (2, 8) and x[0, 0] == x[1, 0] == vocab.special["<cls>"]
    assert x[0, 4] == vocab.special["<eos>"] and x[1, 7] == vocab.special["<eos>"] and x[0, 5] == vocab.pad_id
    assert out["attention_mask"].sum(1).tolist() == [5, 8]
    assert ((lab != -100).sum(1)).tolist() == [max(1, round(0.15 * 3)), max(1, round(0.15 * 6))]
    assert torch.all(lab[:, 0] == -100) and torch.all(lab[0, 4:] == -100)
    assert out["loss_weight"].tolist() == [1.0, 0.0]
    alone = col(genes[3:30], np.array([0, 27]), ids[1:], np.array([True]), epoch=0)
    assert torch.equal(alone["input_ids"][0], x[1]) and torch.equal(alone["labels"][0], lab[1])
    assert not torch.equal(col(genes, offsets, ids, np.array([False, True]), epoch=1)["labels"], lab)


def test_mask_proportions_over_many_cells(zarr_set):
    vocab = read_vocab(zarr_set / "vocab.csv")
    col = Collator(vocab, context_length=402, seed=3)
    n = 400
    genes = np.tile(np.arange(4, 4 + n, dtype=np.int32), 200)
    out = col(
        genes,
        np.arange(0, 200 * n + 1, n),
        np.array([f"c{i}" for i in range(200)], dtype=object),
        np.zeros(200, bool),
        0,
    )
    masked = out["labels"] != -100
    assert masked.sum().item() == 200 * 60
    as_mask = (out["input_ids"] == vocab.special["<mask>"]) & masked
    unchanged = (out["input_ids"] == out["labels"]) & masked
    assert 0.77 < as_mask.sum().item() / masked.sum().item() < 0.83
    assert 0.08 < unchanged.sum().item() / masked.sum().item() < 0.12


@pytest.mark.parametrize("workers", [0, 2])
def test_every_cell_once_per_epoch_and_epochs_differ(zarr_set, workers):
    ds = _ds(zarr_set)
    e0, e1 = _epochs(_loader(ds, workers, persistent=True), ds, [0, 1])
    n_train = load_manifest(zarr_set)["splits"]["train"]["n_cells"]
    for batches in (e0, e1):
        ids = [c for b in batches for c in b["cell_id"]]
        assert len(ids) == len(set(ids)) and n_train - len(ids) < 16 * max(workers, 1)
    assert [b["cell_id"] for b in e0] != [b["cell_id"] for b in e1]  # the epoch reached the persistent workers


@pytest.mark.slow
@pytest.mark.parametrize(("fmt", "workers"), [("zarr", 0), ("zarr", 1), ("zarr", 2), ("webdataset", 2)])
def test_exact_resume_mid_epoch_and_across_epochs(zarr_set, wds_set, fmt, workers):
    root = zarr_set if fmt == "zarr" else wds_set
    ds = _ds(root)
    reference = [b for epoch in _epochs(_loader(ds, workers), ds, [0, 1]) for b in epoch]
    per_epoch = len(reference) // 2
    for stop in (per_epoch // 2 + 1, per_epoch + 3):  # mid-epoch 0, mid-epoch 1
        ds = _ds(root)
        loader = _loader(ds, workers)
        epoch, taken = 0, 0
        ds.set_epoch(0)
        it = iter(loader)
        while taken < stop:
            try:
                next(it)
                taken += 1
            except StopIteration:
                epoch += 1
                ds.set_epoch(epoch)
                it = iter(loader)
        state = loader.state_dict()
        del it, loader
        ds2 = _ds(root)
        ds2.set_epoch(epoch)
        loader2 = _loader(ds2, workers)
        loader2.load_state_dict(state)
        _same(_rest_of_two_epochs(ds2, loader2, epoch), reference[stop:])


def test_state_from_other_settings_is_refused(zarr_set, wds_set):
    ds = _ds(zarr_set)
    state = ds.state_dict()
    for other, needle in [
        (_ds(wds_set), "shard set"),
        (_ds(zarr_set, seed=6), "seed"),
        (_ds(zarr_set, batch_size=8), "batch_size"),
    ]:
        with pytest.raises(ShardError, match=needle):
            other.load_state_dict(state)


def test_bad_options(zarr_set, tmp_path):
    with pytest.raises(ShardError, match="context_length"):
        _ds(zarr_set, context_length=2)
    with pytest.raises(ShardError, match="batch_size"):
        _ds(zarr_set, batch_size=0)
    with pytest.raises(ShardError, match="not a finished shard set"):
        _ds(tmp_path)
    with pytest.raises(ShardError, match="split"):
        _ds(zarr_set, split="test")


def _cell_loader(root, workers, **kw):
    from shards.loading.loader import CellDataLoader

    ds = _ds(root, **kw)
    return ds, CellDataLoader(ds, num_workers=workers)


@pytest.mark.slow
@pytest.mark.parametrize("workers", [0, 2])
def test_rank_independent_state_resumes_exactly(zarr_set, workers):
    ds, loader = _cell_loader(zarr_set, workers)
    reference = [b for epoch in _epochs(loader, ds, [0, 1]) for b in epoch]
    per_epoch = len(reference) // 2
    for stop in (5, per_epoch + 7):
        ds, loader = _cell_loader(zarr_set, workers)
        taken, epoch = [], 0
        while len(taken) < stop:
            ds.set_epoch(epoch)
            for batch in loader:
                taken.append(batch)
                if len(taken) == stop:
                    break
            else:
                epoch += 1
        state = loader.state_dict()
        assert state["epoch"] == epoch and state["batches"] == stop - epoch * per_epoch
        ds2, loader2 = _cell_loader(zarr_set, workers)
        loader2.load_state_dict(state)
        _same(_rest_of_two_epochs(ds2, loader2, epoch), reference[stop:])


@pytest.mark.parametrize("pack", [False, True], ids=["padded", "packed"])
def test_elastic_resume_in_one_process_and_global_batch_check(zarr_set, pack):
    """Also packed: packing lays out each batch's cells, the plan (and so the elastic resume) is the same."""
    from shards.loading.loader import CellDataLoader

    served = []
    states = []
    for rank in range(3):  # 3 ranks x 4 cells, stopped after 11 batches each
        ds = _ds(zarr_set, batch_size=4, rank=rank, world_size=3, pack=pack)
        ds.set_epoch(2)
        loader = CellDataLoader(ds)
        for i, batch in enumerate(loader):
            served += batch["cell_id"]
            if i == 10:
                break
        states.append(loader.state_dict())
    assert states[0] == states[1] == states[2]  # nothing rank-specific in the state
    with pytest.raises(ShardError, match="global batch size"):
        CellDataLoader(_ds(zarr_set, batch_size=5, rank=0, world_size=2)).load_state_dict(states[0])
    ds = _ds(zarr_set, batch_size=12, rank=0, world_size=1, pack=pack)
    loader = CellDataLoader(ds)
    loader.load_state_dict(states[0])
    served += [c for b in loader for c in b["cell_id"]]
    n_train = load_manifest(zarr_set)["splits"]["train"]["n_cells"]
    assert len(served) == len(set(served)) and n_train - len(served) < 12


def test_value_bins_follow_counts(zarr_set):
    vocab = read_vocab(zarr_set / "vocab.csv")
    col = Collator(vocab, context_length=64, seed=2, value_bins=11)
    counts = np.array([50, 20, 20, 9, 5, 3, 1, 1, 1, 1], dtype=np.int32)  # rank order: counts descending-ish
    cell = (np.arange(4, 14, dtype=np.int32), np.array([0, 10]), np.array(["x:1"], dtype=object), np.array([False]))
    out = col(*cell, 0, counts=counts)
    v = out["values"][0].tolist()
    assert v[0] == 0 and v[11] == 0  # <cls>, <eos>
    bins = v[1:11]
    assert all(1 <= b <= 10 for b in bins)
    pairs = [(i, j) for i in range(10) for j in range(10) if counts[i] > counts[j]]
    assert all(bins[i] >= bins[j] for i, j in pairs)  # more counts, never a lower bin (ties may split)
    assert bins[0] == 10 and bins[-1] <= 2
    again = col(*cell, 0, counts=counts)
    assert torch.equal(again["values"], out["values"])  # seeded tie-breaking
    ds = _ds(zarr_set, value_bins=11)
    ds.set_epoch(0)
    batch = next(iter(ds))
    assert batch["values"].shape == batch["input_ids"].shape and int(batch["values"].max()) <= 10


def test_token_balanced_loader_covers_every_cell_once(zarr_set):
    served, tokens = [], []
    for rank in range(2):
        ds = _ds(zarr_set, rank=rank, world_size=2, balance_tokens=True)
        ds.set_epoch(0)
        batches = list(ds)
        served += [c for b in batches for c in b["cell_id"]]
        tokens.append(sum(int(b["attention_mask"].sum()) for b in batches))
    n_train = load_manifest(zarr_set)["splits"]["train"]["n_cells"]
    assert len(served) == len(set(served)) and n_train - len(served) < 2 * 16
    assert abs(tokens[0] - tokens[1]) / np.mean(tokens) < 0.05  # 2k cells truncated at 126: coarse check


def test_token_budget_batches_fit_and_ranks_agree(zarr_set):
    budget = 8 * 2048
    counts, served = [], []
    for rank in range(2):
        ds = _ds(zarr_set, rank=rank, world_size=2, token_budget=budget, context_length=2048, batch_size=8)
        ds.set_epoch(0)
        batches = list(ds)
        assert all(b["input_ids"].numel() <= budget for b in batches)
        assert len({b["input_ids"].shape[0] for b in batches}) > 1  # sizes follow the cells' lengths
        counts.append(len(batches))
        served += [c for b in batches for c in b["cell_id"]]
    assert counts[0] == counts[1] and len(served) == len(set(served))
    ds = _ds(zarr_set, rank=0, world_size=2, token_budget=budget, context_length=2048, batch_size=8)
    ds.set_epoch(0)
    full = list(ds)
    state = None
    ds = _ds(zarr_set, rank=0, world_size=2, token_budget=budget, context_length=2048, batch_size=8)
    ds.set_epoch(0)
    for i, _ in enumerate(ds):
        if i == 6:
            state = ds.state_dict()
            break
    again = _ds(zarr_set, rank=0, world_size=2, token_budget=budget, context_length=2048, batch_size=8)
    again.load_state_dict(state)
    _same(list(again), full[7:])
    with pytest.raises(ShardError, match="token_budget"):
        _ds(zarr_set, token_budget=64)


def test_fast_tar_and_npy_decoding_matches_the_stock_readers():
    """The WebDataset read path parses ustar headers and 1-D ``.npy`` headers itself (for speed); it must
    agree with ``tarfile`` and ``np.load`` and refuse what they refuse."""
    import io
    import tarfile

    from shards.errors import ShardError
    from shards.format.webdataset.reader import _npy, _read_header

    for arr in (
        np.arange(7, dtype=np.int32),
        np.zeros(0, np.int64),
        np.linspace(0, 1, 5).astype("<f4"),
        np.arange(6, dtype=np.uint16).reshape(2, 3),
        np.array([1, 2], dtype=">i4"),
    ):
        buf = io.BytesIO()
        np.save(buf, arr, allow_pickle=False)
        got = _npy(buf.getvalue(), "x")
        assert got.dtype == arr.dtype and got.shape == arr.shape and np.array_equal(got, arr)
    buf = io.BytesIO()
    np.save(buf, np.arange(4, dtype=np.int32))
    with pytest.raises(ShardError, match="does not hold 4"):
        _npy(buf.getvalue()[:-1], "x")
    buf = io.BytesIO()
    np.save(buf, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ShardError, match=r"unreadable \.npy"):
        _npy(buf.getvalue(), "x")  # object arrays need pickle: refused

    for name in ("c000000000001.genes.npy", "d/" + "x" * 150 + ".json"):  # the long one needs a GNU/pax header
        for fmt in (tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT):
            if len(name) > 100 and fmt == tarfile.USTAR_FORMAT:
                continue
            info = tarfile.TarInfo(name)
            info.size = 1234
            block = info.tobuf(fmt, "utf-8", "strict")[-512:] if len(name) <= 100 else info.tobuf(fmt)[:512]
            ref = tarfile.TarInfo.frombuf(block, "utf-8", "strict")
            assert _read_header(block, "x") == (ref.name, ref.size, ref.isreg())
    info = tarfile.TarInfo("c0.json")
    info.size = 10
    block = bytearray(info.tobuf(tarfile.USTAR_FORMAT))
    block[0] ^= 1  # a flipped bit in the name: the header checksum no longer matches
    with pytest.raises(ShardError, match="bad tar header"):
        _read_header(bytes(block), "x")
