"""Weighted and with-replacement epochs planned per shard (``plan.drawing``) and the per-shard label
counts they plan from (``format.labels``): exact totals, per-cell serve counts that are the floor or the
ceiling of their expectation, class shares in proportion to weight, determinism, and a loader that plans
a weighted epoch without reading a shard."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shards import ShardedCellDataset, ShardError
from shards.format.labels import LabelCounts, count_labels, read_label_counts, write_label_counts
from shards.loading.readers import ShardSetReader
from shards.plan.drawing import StreamDraw, class_inclusion, drawn_plan, systematic, unit_resolver


def _counts(codes_per_shard: list[np.ndarray], classes: int) -> LabelCounts:
    indptr, codes, counts = [0], [], []
    for c in codes_per_shard:
        present, n = np.unique(c, return_counts=True)
        codes += present.tolist()
        counts += n.tolist()
        indptr.append(len(codes))
    return LabelCounts(
        "x",
        np.arange(classes).astype(str),
        np.array(indptr, np.int64),
        np.array(codes, np.uint16),
        np.array(counts, np.uint16),
        np.zeros(len(codes_per_shard), np.int32),
    )


def _serve_counts(shards: list[np.ndarray], weights, n: int, replacement: bool, seed: int, epoch: int = 0):
    """Per-cell serve counts of a drawn epoch, every unit resolved as a loader process would."""
    cells = np.array([len(c) for c in shards])
    classes = len(weights)
    counts = _counts(shards, classes)
    p = np.asarray(weights, float) / float((np.asarray(weights, float) * counts.totals()).sum())
    plan, per_stream = drawn_plan(
        cells, [len(cells)], [n], [StreamDraw(counts, p)], replacement=replacement, seed=seed, epoch=epoch
    )
    resolve = unit_resolver(plan, per_stream, np.zeros(len(cells), int), lambda s: shards[s], seed=seed, epoch=epoch)
    starts = np.concatenate([[0], np.cumsum(cells)])
    served = np.zeros(int(cells.sum()), np.int64)
    for u in range(len(plan.shard_order)):
        got, _ = resolve(u)
        assert len(got) == plan.unit_cells[u]  # the size planned is the size resolved
        np.add.at(served, starts[plan.shard_order[u]] + got, 1)
    return served, np.concatenate(shards), plan


@settings(max_examples=100, deadline=None)
@given(
    w=st.lists(st.one_of(st.just(0.0), st.floats(1e-4, 10)), min_size=1, max_size=8),
    n=st.lists(st.integers(0, 50), min_size=1, max_size=8),
    frac=st.floats(0, 1),
)
def test_class_inclusion_sums_to_the_total_and_caps_at_one(w, n, frac):
    k = min(len(w), len(n))
    w, n = np.array(w[:k]), np.array(n[:k])
    capacity = n[w > 0].sum()
    total = frac * capacity
    pi = class_inclusion(w, n, total)
    assert (pi >= 0).all() and (pi <= 1 + 1e-12).all() and (pi[w == 0] == 0).all()
    assert abs((pi * n).sum() - total) < 1e-6 * max(1, total)
    free = (pi < 1 - 1e-9) & (w > 0) & (n > 0)
    if free.sum() > 1:  # uncapped classes are in proportion to their weight
        ratio = pi[free] / w[free]
        assert np.allclose(ratio, ratio[0])


@settings(max_examples=100, deadline=None)
@given(e=st.lists(st.floats(0, 5), min_size=1, max_size=30), u=st.floats(0, 0.999999))
def test_systematic_rounding_is_exact_and_floor_or_ceiling(e, u):
    e = np.array(e)
    e = e / max(e.sum(), 1e-9) * round(e.sum())  # an integral total
    k = systematic(e, u)
    assert k.sum() == round(e.sum())
    assert ((k >= np.floor(e - 1e-6)) & (k <= np.ceil(e + 1e-6))).all()


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    shards=st.lists(st.integers(1, 40), min_size=1, max_size=6),
    weights=st.lists(st.sampled_from([0.0, 0.5, 1.0, 3.0, 20.0]), min_size=2, max_size=4),
    factor=st.floats(0.05, 3.0),
    replacement=st.booleans(),
)
def test_serve_counts_are_the_floor_or_ceiling_of_their_expectation(seed, shards, weights, factor, replacement):
    rng = np.random.default_rng(seed)
    weights = np.array(weights)
    if not (weights > 0).any():
        weights[0] = 1.0
    codes = [rng.integers(0, len(weights), size) for size in shards]
    all_codes = np.concatenate(codes)
    total_cells = len(all_codes)
    if not (weights[all_codes] > 0).any():
        all_codes[0] = codes[0][0] = int(np.flatnonzero(weights > 0)[0])
    n = max(1, int(factor * total_cells))
    served, cls, plan = _serve_counts(codes, weights, n, replacement, seed)
    assert served.sum() == n == plan.n_cells  # exact total
    assert (served[weights[cls] == 0] == 0).all()  # weight 0: never served
    if replacement:
        mu = n * weights[cls] / weights[cls].sum()  # expected serves of each cell
        assert ((served >= np.floor(mu - 1e-6)) & (served <= np.ceil(mu + 1e-6))).all()
    else:
        positive = weights[cls] > 0
        whole = n // positive.sum()
        assert set(np.unique(served[positive]).tolist()) <= {whole, whole + 1}


def test_class_shares_follow_the_weights_over_seeds():
    """Without replacement, 300 of 1,000 cells with weights 1:4 on classes of 800 and 200 cells: each
    cell of the light class is in with probability t and of the heavy one 4t (t = 300 / 1,600); the mean
    over 200 epochs is within 5 standard errors of that, cell by cell on average."""
    rng = np.random.default_rng(0)
    codes = [rng.permutation(np.r_[np.zeros(160, int), np.ones(40, int)]) for _ in range(5)]
    cls = np.concatenate(codes)
    runs = np.array([_serve_counts(codes, [1.0, 4.0], 300, False, seed=7, epoch=e)[0] for e in range(200)])
    t = 300 / 1600
    for g, pi in ((0, t), (1, 4 * t)):
        mean = runs[:, cls == g].mean()
        se = np.sqrt(pi * (1 - pi) / (200 * (cls == g).sum()))
        assert abs(mean - pi) < 5 * se + 0.01, (g, mean, pi)
    # every epoch draws exactly 300, and another epoch draws other cells
    assert (runs.sum(axis=1) == 300).all() and not np.array_equal(runs[0], runs[1])


def test_a_drawn_epoch_is_a_function_of_seed_and_epoch():
    rng = np.random.default_rng(1)
    codes = [rng.integers(0, 3, 50) for _ in range(4)]
    a = _serve_counts(codes, [1.0, 2.0, 5.0], 170, True, seed=3)[0]
    b = _serve_counts(codes, [1.0, 2.0, 5.0], 170, True, seed=3)[0]
    c = _serve_counts(codes, [1.0, 2.0, 5.0], 170, True, seed=4)[0]
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_label_counts_roundtrip_and_select(tmp_path):
    tables = [
        pa.table({"cell_id": ["a", "b", "c"], "cell_type": ["T", "B", "T"], "n": [1, 2, 3]}),
        pa.table({"cell_id": ["d", "e"], "cell_type": ["NK", None], "n": [1, 2]}),
    ]
    per_shard = [count_labels(t) for t in tables]
    assert per_shard[0] == {"cell_type": {"T": 2, "B": 1}}  # ids and numbers are not labels
    entry = write_label_counts(tmp_path, per_shard)
    assert entry["columns"] == ["cell_type"]
    counts = read_label_counts((tmp_path / entry["file"]).read_bytes(), "cell_type", "set")
    assert counts.values.tolist() == ["B", "NK", "T"] and counts.totals().tolist() == [1, 1, 2]
    assert counts.missing.tolist() == [0, 1]
    assert counts.shard_sums(np.array([1.0, 10.0, 100.0])).tolist() == [201.0, 10.0]
    assert counts.select(np.array([1])).totals().tolist() == [0, 1, 0]
    with pytest.raises(ShardError, match="no counts of 'tissue'"):
        read_label_counts((tmp_path / entry["file"]).read_bytes(), "tissue", "set")


# -- the loader ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["zarr", "webdataset"])
def test_ingest_writes_label_counts_that_match_the_shards(zarr_set, wds_set, fmt):
    root = zarr_set if fmt == "zarr" else wds_set
    for split in ("train", "val"):
        r = ShardSetReader(root, split)
        counts = r.label_counts("cell_type")
        assert counts is not None and "cell_id" not in r.manifest.labels.columns
        for i in range(len(r.shards)):
            values, n = np.unique(r.column(i, "cell_type").astype(str), return_counts=True)
            a, b = counts.indptr[i], counts.indptr[i + 1]
            assert dict(
                zip(counts.values[counts.codes[a:b]].tolist(), counts.counts[a:b].tolist(), strict=True)
            ) == dict(zip(values.tolist(), n.tolist(), strict=True))


def test_a_weighted_epoch_is_planned_without_reading_a_shard(wds_set, monkeypatch):
    """The main process plans a weighted epoch (and counts its batches) from labels.npz alone: for
    WebDataset that is no tar read at all; the cells of a unit are drawn when its shard is read."""
    reads: list[int] = []
    real = ShardSetReader.column
    monkeypatch.setattr(ShardSetReader, "column", lambda self, i, name: reads.append(i) or real(self, i, name))
    ds = ShardedCellDataset(
        str(wds_set), batch_size=8, context_length=32, weighting={"column": "cell_type"}, replacement=True
    )
    assert len(ds) > 0 and ds.mode.plan_epoch(0).n_cells == ds.reader.shard_cells.sum()
    assert reads == []
    batches = list(ds)
    assert len(batches) == len(ds) and reads  # the shards served were read, and their labels with them


def test_a_set_without_label_counts_streams_but_asks_to_be_rebuilt_for_weights(zarr_set, tmp_path):
    import json
    import shutil

    from shards.format.manifest import dump_manifest

    old = tmp_path / "old"
    shutil.copytree(zarr_set, old)
    doc = json.loads((old / "index.json").read_text())
    del doc["labels"]
    (old / "labels.npz").unlink()
    dump_manifest(old, doc)
    assert len(list(ShardedCellDataset(str(old), batch_size=8, context_length=32))) > 0
    with pytest.raises(ShardError, match=r"no per-shard counts of 'cell_type' \(labels.npz\).*rebuild it"):
        ShardedCellDataset(str(old), batch_size=8, context_length=32, weighting={"column": "cell_type"})


def test_a_damaged_label_file_is_found_by_verify_and_refused_by_the_loader(zarr_set, tmp_path):
    import shutil

    from shards.format.verify import verify_shard_set

    bad = tmp_path / "bad"
    shutil.copytree(zarr_set, bad)
    data = bytearray((bad / "labels.npz").read_bytes())
    data[-100] ^= 0xFF
    (bad / "labels.npz").write_bytes(bytes(data))
    assert [f.path for f in verify_shard_set(bad)] == ["labels.npz"]
    with pytest.raises(ShardError, match=r"labels.npz: sha256 differs from the manifest"):
        ShardedCellDataset(str(bad), batch_size=8, context_length=32, weighting={"column": "cell_type"})
