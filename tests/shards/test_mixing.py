"""Multi-source mixing, weighted and curriculum sampling, grouped batches and gene panels.

Simulated ranks run in one process with the real readers; one real torchrun job checks the same
guarantees across processes (with a spawned worker per rank). Tolerances are stated where a draw is
random: within 5 standard deviations of the multinomial expectation, or exact where the math is exact.
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import json
import subprocess
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest import SynthSpec, synthesize
from shards import ShardedCellDataset, ShardError
from shards.loading.collate import Collator
from shards.loading.loader import CellDataLoader
from shards.loading.readers import ShardSetReader
from shards.plan import plan_slots, stream_positions
from shards.plan.grouping import bounded_group_batches, equalize, group_batches, group_purity
from shards.plan.mixing import apportion, draw_counts, sampled_plan, stream_counts
from shards.plan.weighting import Weighting, class_weights, curriculum_alpha, draw_probabilities
from tests.conftest import small_build
from training.fit.callbacks import SamplerEpoch

PROBE = Path(__file__).with_name("dist_probe.py")
B = 16


@pytest.fixture(scope="session")
def sets(zarr_set, tmp_path_factory) -> dict[str, Path]:
    """A: the shared human Zarr set; B: other human cells (same vocabulary), WebDataset; M: mouse, its own
    vocabulary."""
    root = tmp_path_factory.mktemp("mix")
    h2 = synthesize(SynthSpec(cells=1200, genes=1500, datasets=2, seed=21), root / "h2.h5ad")
    small_build(
        [p for p, _ in h2],
        root / "b",
        format="webdataset",
        val_fraction=0.2,
        split_by="cell",
        vocab=str(zarr_set / "vocab.csv"),
    )
    mouse = synthesize(SynthSpec(cells=900, genes=700, datasets=2, seed=5, organism="mus_musculus"), root / "m.h5ad")
    small_build([p for p, _ in mouse], root / "m", format="zarr", val_fraction=0.2, split_by="cell")
    return {"A": zarr_set, "B": root / "b", "M": root / "m"}


def metadata(path: Path, column: str, split: str = "train") -> dict[str, str]:
    r = ShardSetReader(path, split)
    return {
        c: v for i in range(len(r.shards)) for c, v in zip(r.column(i, "cell_id"), r.column(i, column), strict=True)
    }


def serve(source, world: int = 1, epoch: int = 0, **kw) -> list[list[dict]]:
    """Every simulated rank's batches of one epoch (cell ids and loss weights as lists)."""
    out = []
    for rank in range(world):
        ds = ShardedCellDataset(
            source, batch_size=B, context_length=64, seed=4, rank=rank, world_size=world, return_cell_ids=True, **kw
        )
        ds.set_epoch(epoch)
        out.append([{"ids": b["cell_id"], "w": b["loss_weight"].tolist()} for b in ds])
    return out


def real_cells(ranks: list[list[dict]]) -> list[str]:
    return [c for r in ranks for b in r for c, w in zip(b["ids"], b["w"], strict=True) if w > 0]


def n_train(path: Path) -> int:
    return int(ShardSetReader(path).shard_cells.sum())


# -- streams --------------------------------------------------------------------------------------------
def test_stream_counts_are_exact_and_kinds_do_not_mix():
    assert apportion(np.array([0.7, 0.3]), 1001).tolist() == [701, 300]
    assert stream_counts([100, 50], [("weight", 3), ("weight", 1)]).tolist() == [113, 37]
    assert stream_counts([100, 50], [("repeat", 2), ("choose", 10)]).tolist() == [200, 10]
    assert stream_counts([100, 50], [("natural", 1), ("repeat", 0.5)], num_samples=250).tolist() == [200, 50]
    with pytest.raises(ShardError, match="give every stream a weight"):
        stream_counts([100, 50], [("weight", 1), ("repeat", 1)])
    with pytest.raises(ShardError, match="sum to 0"):
        stream_counts([100, 50], [("weight", 0), ("weight", 0)])


def test_weighted_streams_proportions_over_an_epoch(sets):
    ranks = serve([{"path": sets["A"], "weight": 0.75}, {"path": sets["B"], "weight": 0.25}], world=2, num_samples=2000)
    assert len({len(r) for r in ranks}) == 1  # equal batch counts
    cells = real_cells(ranks)
    assert 2000 - len(cells) < 2 * B  # only the drop remainder is missing
    share = sum(c.startswith("syn") for c in cells) / len(cells)
    assert abs(share - 0.75) < 0.01, share  # exact apportioning; the remainder moves it < 1%


def test_repeat_and_choose_serve_exact_counts(sets):
    ranks = serve([{"path": sets["A"], "repeat": 2}, {"path": sets["B"], "choose": 300}], world=2, remainder="pad")
    counts = collections.Counter(real_cells(ranks))
    a = [c for c in counts if c.startswith("syn")]
    assert len(a) == n_train(sets["A"]) and {counts[c] for c in a} == {2}  # every A cell twice
    b = [c for c in counts if not c.startswith("syn")]
    assert len(b) == 300 and {counts[c] for c in b} == {1}  # 300 distinct B cells (without replacement)


def test_copies_of_a_cell_get_their_own_masks(sets):
    """``repeat: 2`` serves every cell twice in an epoch: the two copies are masked differently, the first
    copy exactly as a plain epoch masks the cell (copy 0 keeps the cell's hash)."""
    opts = {"batch_size": B, "context_length": 64, "seed": 4, "rank": 0, "world_size": 1, "return_cell_ids": True}
    masks: dict[str, list[list[int]]] = collections.defaultdict(list)
    for b in ShardedCellDataset([{"path": str(sets["A"]), "repeat": 2}], **opts):
        for cell, labels in zip(b["cell_id"], b["labels"], strict=True):
            masks[cell].append(sorted(torch.nonzero(labels >= 0).ravel().tolist()))
    plain = {}
    for b in ShardedCellDataset(str(sets["A"]), **opts):
        for cell, labels in zip(b["cell_id"], b["labels"], strict=True):
            plain[cell] = sorted(torch.nonzero(labels >= 0).ravel().tolist())
    twice = [c for c, m in masks.items() if len(m) == 2]
    assert len(twice) > 0.9 * len(plain)
    differ = sum(masks[c][0] != masks[c][1] for c in twice)
    assert differ > 0.95 * len(twice), (differ, len(twice))  # only cells with 1-2 genes may coincide
    assert all(plain[c] in masks[c] for c in twice if c in plain)  # one of the copies is masked as plainly


def test_vocabularies_must_match_or_be_remapped(sets):
    with pytest.raises(ShardError, match=r"another vocabulary .*first difference: ENSG.*vocab_join: remap"):
        ShardedCellDataset([str(sets["A"]), str(sets["M"])], batch_size=B, rank=0, world_size=1)
    ds = ShardedCellDataset([str(sets["A"]), str(sets["M"])], vocab="remap", batch_size=B, rank=0, world_size=1)
    joint, own = ds.reader.vocab(), ShardSetReader(sets["M"]).vocab()
    a_vocab = ShardSetReader(sets["A"]).vocab()
    assert joint.token_of() | a_vocab.token_of() == joint.token_of()  # the first stream keeps its ids
    genes, _, _, _ = ShardSetReader(sets["M"]).read(0, 0, 5)
    mapped, _, _, _ = ds.reader.read(ds.reader._first[1], 0, 5)  # first shard of the mouse stream
    back = {t: g for g, t in joint.token_of().items()}
    mine = {t: g for g, t in own.token_of().items()}
    assert [back[t] for t in mapped.tolist()] == [mine[t] for t in genes.tolist()]  # same genes, joint ids
    assert all(back[t].startswith("ENSMUSG") for t in mapped.tolist())


# -- weighting ------------------------------------------------------------------------------------------
def test_smoothed_inverse_frequency_class_shares():
    sizes = np.array([20_000, 2_000, 200, 20])
    codes = np.repeat(np.arange(4), sizes)
    n = 400_000
    for s in (0.0, 500.0):
        w = Weighting(column="c", smoothing=s)
        per_class = class_weights(w, np.array(list("abcd"), dtype=object), sizes, "test")
        probs = draw_probabilities(codes, per_class, 1.0)
        counts = draw_counts(n, probs, len(codes), replacement=True, rng=np.random.default_rng(0))
        got = np.bincount(codes, weights=counts)
        share = sizes / (sizes + s)
        expect = n * share / share.sum()
        sd = np.sqrt(expect * (1 - expect / n))
        assert (np.abs(got - expect) < 5 * sd).all(), (s, got, expect)
    # without replacement, n < N: every cell at most once, and the rare classes are (almost) all in
    counts = draw_counts(800, probs, len(codes), replacement=False, rng=np.random.default_rng(1))
    assert counts.max() == 1 and counts.sum() == 800


def test_balanced_weighting_flattens_cell_types(sets):
    kinds = metadata(sets["A"], "cell_type")
    natural = collections.Counter(kinds.values())
    ranks = serve(str(sets["A"]), world=2, weighting={"column": "cell_type"}, replacement=True, num_samples=6000)
    got = collections.Counter(kinds[c] for c in real_cells(ranks))
    n, k = sum(got.values()), len(natural)
    expect = n / k
    sd = np.sqrt(expect * (1 - 1 / k))
    assert set(got) == set(natural)
    assert all(abs(v - expect) < 5 * sd for v in got.values()), (got, expect)
    assert max(natural.values()) / min(natural.values()) > 3  # the natural frequencies were far from flat


def test_table_weights_exclude_and_name_missing_values(sets):
    kinds = metadata(sets["A"], "cell_type")
    keep = sorted(set(kinds.values()))[:2]
    ranks = serve(
        str(sets["A"]),
        weighting={"column": "cell_type", "table": dict.fromkeys(keep, 1.0), "default": 0},
        num_samples=300,
    )
    assert {kinds[c] for c in real_cells(ranks)} <= set(keep)
    with pytest.raises(ShardError, match=r"cell_type values \[.*\] are not in weighting.table"):
        serve(str(sets["A"]), weighting={"column": "cell_type", "table": {keep[0]: 1.0}})
    with pytest.raises(ShardError, match="no metadata column 'nope'"):
        serve(str(sets["A"]), weighting={"column": "nope"})
    with pytest.raises(ShardError, match=r"weighting.scheme='x'"):
        serve(str(sets["A"]), weighting={"column": "cell_type", "scheme": "x"})


def test_curriculum_schedule_at_0_half_and_k(sets):
    k = 4
    assert [curriculum_alpha(e, k) for e in (0, 2, 4, 9)] == [0.0, 0.5, 1.0, 1.0]
    sizes = np.array([900, 90, 10])
    codes = np.repeat(np.arange(3), sizes)
    per_class = 1.0 / sizes
    shares = [
        np.bincount(codes, weights=draw_probabilities(codes, per_class, curriculum_alpha(e, k))) for e in (0, 2, 4)
    ]
    assert np.allclose(shares[0], sizes / sizes.sum()) and np.allclose(shares[2], 1 / 3)
    assert np.allclose(shares[1], (shares[0] + shares[2]) / 2)
    # through the dataset, advanced by the sampler-epoch callback as in training
    kinds = metadata(sets["A"], "cell_type")
    natural = collections.Counter(kinds.values())
    rare = min(natural, key=natural.get)
    ds = ShardedCellDataset(
        str(sets["A"]),
        batch_size=B,
        context_length=64,
        rank=0,
        world_size=1,
        seed=4,
        return_cell_ids=True,
        replacement=True,
        num_samples=4000,
        weighting={"column": "cell_type", "curriculum_epochs": k},
    )
    seen = []
    for epoch in (0, 2, 4):
        SamplerEpoch().on_train_epoch_start(
            SimpleNamespace(train_dataloader=SimpleNamespace(dataset=ds), current_epoch=epoch), None
        )
        assert ds.epoch == epoch
        cells = [c for b in ds for c in b["cell_id"]]
        seen.append(sum(kinds[c] == rare for c in cells) / len(cells))
    p_nat, p_bal = natural[rare] / sum(natural.values()), 1 / len(natural)
    for got, want in zip(seen, (p_nat, (p_nat + p_bal) / 2, p_bal), strict=True):
        assert abs(got - want) < 5 * np.sqrt(want * (1 - want) / 4000) + 1e-9, (seen, p_nat, p_bal)


def test_without_replacement_exactly_once_and_equal_counts(sets):
    for world in (1, 3):
        ranks = serve(
            [str(sets["A"]), str(sets["B"])],
            world=world,
            num_samples=1500,
            weighting={"column": "cell_type", "smoothing": 50},
        )
        assert len({len(r) for r in ranks}) == 1
        cells = real_cells(ranks)
        assert len(cells) == len(set(cells)) and 1500 - len(cells) < world * B


# -- grouped batches ------------------------------------------------------------------------------------
def test_group_batches_pure_function():
    rng = np.random.default_rng(3)
    slots = [group_batches(rng.integers(0, 5, n), 8, policy="pad") for n in (96, 104, 80)]
    for labels_n, g in zip((96, 104, 80), slots, strict=True):
        assert (np.diff(g.ready) >= 0).all()
        real = g.index[~g.pad]
        assert sorted(real.tolist()) == list(range(labels_n))  # every cell exactly once
    eq = equalize(slots, "pad")
    assert len({s.n_batches for s in eq}) == 1
    drop = equalize([group_batches(rng.integers(0, 5, 96), 8, policy="drop") for _ in range(3)], "drop")
    assert len({s.n_batches for s in drop}) == 1 and not any(s.pad.any() for s in drop)


@pytest.mark.parametrize("remainder", ["pad", "drop"])
def test_exact_grouped_batches_are_pure_and_balanced(sets, remainder):
    group = metadata(sets["A"], "dataset_id")
    ranks = serve(str(sets["A"]), world=2, group_by="dataset_id", group_exact=True, remainder=remainder)
    assert len({len(r) for r in ranks}) == 1
    for r in ranks:
        for b in r:
            assert len(b["ids"]) == B and len({group[c] for c in b["ids"]}) == 1  # one dataset per batch
    cells = real_cells(ranks)
    assert len(cells) == len(set(cells))
    if remainder == "pad":
        assert set(cells) == set(group)  # every train cell exactly once (repeats weigh 0)
    per_rank = [[group[b["ids"][0]] for b in r] for r in ranks]
    assert all(len(set(g)) > 1 for g in per_rank)  # every rank serves several groups, interleaved
    assert all(any(a != b for a, b in itertools.pairwise(g)) for g in per_rank)


def test_bounded_group_batches_pure_function():
    """Every position once, n / b batches, the pool bound kept; with a pool that fits every group's
    partial batch, only the final drain mixes groups."""
    rng = np.random.default_rng(5)
    b = 8
    for pool_cells, groups in ((8, 6), (24, 6), (1000, 6), (40, 30)):
        labels = rng.zipf(1.5, 400) % groups
        g = bounded_group_batches(labels, b, pool_cells)
        assert g.n_batches == 50 and sorted(g.index.ravel().tolist()) == list(range(400))
        ready = np.maximum.accumulate(g.ready)
        read = -(-(ready + 1) // b) * b  # cells read when each batch is cut (a batch's worth at a time)
        assert (read - b * np.arange(1, 51) <= pool_cells + b).all()  # waiting cells stay within the bound
        mixed = (labels[g.index] != g.group[:, None]).any(axis=1)
        if pool_cells >= groups * b:
            assert mixed.sum() <= groups and not mixed[: 50 - groups].any()
        assert group_purity(g, labels) == 1 - (labels[g.index] != g.group[:, None]).mean()
    with pytest.raises(ValueError, match="at least batch_size"):
        bounded_group_batches(np.zeros(16, int), 8, 4)


def test_bounded_groups_read_no_label_up_front_and_balance_ranks(sets, monkeypatch):
    """``group_pool_cells``: every rank the plain batch count, planned without any label; each slot reads
    its own shards' groups when it starts; a pool that holds every group's partial batch (12 cell types x
    16) keeps most batches to one group, a small pool fewer."""
    group = metadata(sets["A"], "cell_type")
    reads: list[int] = []
    real = ShardSetReader.column
    monkeypatch.setattr(ShardSetReader, "column", lambda self, i, name: reads.append(i) or real(self, i, name))
    kw = {"batch_size": B, "context_length": 64, "seed": 4, "world_size": 2, "return_cell_ids": True}
    plain = ShardedCellDataset(str(sets["A"]), rank=0, **kw)
    pure = {}
    for pool_cells in (2 * B, 16 * B):
        datasets = [
            ShardedCellDataset(str(sets["A"]), rank=r, group_by="cell_type", group_pool_cells=pool_cells, **kw)
            for r in (0, 1)
        ]
        reads.clear()
        assert [len(d) for d in datasets] == [len(plain)] * 2 and reads == []
        ranks = [[b["cell_id"] for b in d] for d in datasets]
        assert [len(r) for r in ranks] == [len(plain)] * 2 and reads
        cells = [c for r in ranks for b in r for c in b]
        assert len(cells) == len(set(cells)) == len(plain) * 2 * B  # every served cell once
        pure[pool_cells] = sum(len({group[c] for c in b}) == 1 for r in ranks for b in r) / (2 * len(plain))
    assert pure[16 * B] > 0.5 and pure[16 * B] > pure[2 * B], pure


# -- gene panels ----------------------------------------------------------------------------------------
def _unmasked(ds: ShardedCellDataset) -> ShardedCellDataset:
    ds.collator = Collator(ds.collator.vocab, ds.collator.context_length, masking=False)
    return ds


def test_panels_keep_rank_order_and_only_panel_genes(sets, tmp_path):
    vocab = ShardSetReader(sets["A"]).vocab()
    panel = list(vocab.gene_ids[::3])
    (tmp_path / "panel.csv").write_text("Ensembl_ID,name\n" + "".join(f"{g},x\n" for g in panel))
    kw = {"batch_size": B, "context_length": 2048, "rank": 0, "world_size": 1}
    full = _unmasked(ShardedCellDataset(str(sets["A"]), **kw))
    cut = _unmasked(ShardedCellDataset(str(sets["A"]), panels={"files": [str(tmp_path / "panel.csv")]}, **kw))
    allowed = {vocab.token_of()[g] for g in panel}
    sp = vocab.special
    for a, b in zip(list(full)[:5], list(cut)[:5], strict=True):
        for row_a, row_b in zip(a["input_ids"].tolist(), b["input_ids"].tolist(), strict=True):
            genes_a = [t for t in row_a if t not in sp.values()]
            genes_b = [t for t in row_b if t not in sp.values()]
            assert genes_b == [t for t in genes_a if t in allowed]  # same order, panel genes only
    with pytest.raises(ShardError, match="Ensembl_ID column"):
        (tmp_path / "bad.csv").write_text("gene\nx\n")
        ShardedCellDataset(str(sets["A"]), panels={"files": [str(tmp_path / "bad.csv")]}, **kw)


def test_panel_drawn_per_batch_and_random_genes(sets, tmp_path):
    vocab = ShardSetReader(sets["A"]).vocab()
    files = []
    for j in range(2):
        (tmp_path / f"p{j}.csv").write_text("Ensembl_ID\n" + "\n".join(vocab.gene_ids[j::2]) + "\n")
        files.append({"path": str(tmp_path / f"p{j}.csv"), "organism": "homo_sapiens"})
    kw = {"batch_size": B, "context_length": 2048, "rank": 0, "world_size": 1}
    halves = [set(vocab.tokens[j::2].tolist()) for j in range(2)]
    drawn = []
    for b in _unmasked(ShardedCellDataset(str(sets["A"]), panels={"files": files}, **kw)):
        genes = set(b["input_ids"].ravel().tolist()) - set(vocab.special.values())
        drawn.append(next(j for j in range(2) if genes <= halves[j]))  # one panel per batch
    assert set(drawn) == {0, 1}
    again = [
        set(b["input_ids"].ravel().tolist())
        for b in _unmasked(ShardedCellDataset(str(sets["A"]), panels={"random_genes": 40}, **kw))
    ]
    for s in again:
        assert len(s - set(vocab.special.values())) <= 40
    same = [
        set(b["input_ids"].ravel().tolist())
        for b in _unmasked(ShardedCellDataset(str(sets["A"]), panels={"random_genes": 40}, **kw))
    ]
    assert again == same  # seeded


# -- exact resume ---------------------------------------------------------------------------------------
MIXES = {
    "streams+replacement": {
        "path": [{"path": "A", "weight": 3}, {"path": "B", "weight": 1}],
        "replacement": True,
        "num_samples": 900,
    },
    "weighting+curriculum": {"path": "A", "weighting": {"column": "cell_type", "curriculum_epochs": 2}, "epoch": 1},
    "grouped-exact": {"path": "A", "group_by": "dataset_id", "group_exact": True, "remainder": "pad"},
    "grouped": {"path": "A", "group_by": "dataset_id", "remainder": "pad"},
    "grouped-bounded": {"path": "A", "group_by": "cell_type", "group_pool_cells": 3 * B},
    "panel": {"path": "A", "panels": {"random_genes": 50}, "num_samples": 700},
}


def _resolve(spec, sets):
    if isinstance(spec, str):
        return str(sets[spec])
    if isinstance(spec, dict):
        return {**spec, "path": str(sets[spec["path"]])}
    return [_resolve(s, sets) for s in spec]


@pytest.mark.parametrize("name", list(MIXES))
def test_exact_resume(sets, name):
    spec = dict(MIXES[name])
    epoch = spec.pop("epoch", 0)
    source = _resolve(spec.pop("path"), sets)

    def loader():
        ds = ShardedCellDataset(
            source, batch_size=B, context_length=64, seed=9, rank=0, world_size=1, return_cell_ids=True, **spec
        )
        ds.set_epoch(epoch)
        return CellDataLoader(ds)

    full = list(loader())
    first = loader()
    it = iter(first)
    head = [next(it) for _ in range(7)]
    state = json.loads(json.dumps(first.state_dict()))
    second = loader()
    second.load_state_dict(state)
    rest = list(second)
    assert len(head) + len(rest) == len(full)
    for a, b in zip(head + rest, full, strict=True):
        assert a["cell_id"] == b["cell_id"] and torch.equal(a["input_ids"], b["input_ids"])
    other = ShardedCellDataset(str(sets["A"]), batch_size=B, context_length=64, seed=9, rank=0, world_size=1)
    with pytest.raises(ShardError, match="cannot resume"):
        CellDataLoader(other).load_state_dict(state)  # another mix refuses the saved position


# -- training config ------------------------------------------------------------------------------------
def test_training_config_streams(sets):
    from training.errors import ConfigError
    from training.fit.data import CellDataModule

    dm = CellDataModule(
        streams=[{"path": str(sets["A"]), "weight": 0.5}, {"path": str(sets["M"]), "weight": 0.5}],
        vocab_join="remap",
        weighting={"column": "cell_type", "smoothing": 10},
        num_samples=320,
        batch_size=B,
        context_length=64,
        num_workers=0,
    )
    batch = next(iter(dm.train_dataloader()))
    assert batch["input_ids"].shape[0] == B and int(batch["input_ids"].max()) < dm.vocab_size
    assert set(dm.side_files()) == {"vocab.csv", "gene_medians.stream0.csv", "gene_medians.stream1.csv"}
    val = dm.val_dataloader().dataset
    assert val.split == "val" and not val.mode.sampled and len(val.reader.readers) == 2
    for bad, match in (
        ({"path": str(sets["A"]), "streams": [{"path": str(sets["A"])}]}, "exactly one"),
        ({"streams": [{"path": str(sets["A"]), "weigth": 1}]}, r"data.streams\[0\].weigth: unknown key"),
        ({"path": str(sets["A"]), "weighting": {"column": "cell_type", "smoothing": -1}}, "data.weighting.smoothing"),
        ({"path": str(sets["A"]), "panels": {"random_genes": 0}}, "data.panels.random_genes"),
        ({"path": str(sets["A"]), "group_by": "dataset_id", "token_budget": 512}, "do not combine"),
        ({"path": str(sets["A"]), "group_by": "batch"}, r"data.group_by='batch': .*no metadata column 'batch'"),
        ({"path": str(sets["A"]), "group_exact": True}, "group_exact: needs group_by"),
        ({"path": str(sets["A"]), "group_by": "batch", "group_exact": True}, r"data.group_by='batch'"),
        ({"path": str(sets["A"]), "weighting": {"column": "x"}}, r"data.weighting.column='x': .*no metadata column"),
    ):
        with pytest.raises(ConfigError, match=match):
            CellDataModule(**bad, context_length=64, num_workers=0)


# -- one real 2-process job -----------------------------------------------------------------------------
@pytest.mark.slow
def test_torchrun_two_ranks_mixed_and_weighted(sets, tmp_path):
    from tests.shards.test_distributed import _port, _torchrun

    spec = {
        "path": [{"path": str(sets["A"]), "weight": 2}, {"path": str(sets["B"]), "weight": 1}],
        "num_samples": 1200,
        "weighting": {"column": "cell_type", "smoothing": 20},
    }
    cmd = _torchrun(
        "--nproc-per-node=2", f"--master-port={_port()}", str(PROBE), json.dumps(spec), str(tmp_path), "1", "epochs"
    )
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    records = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    expected = []
    for epoch in range(2):
        assert records[0]["epochs"][epoch]["batches"] == records[1]["epochs"][epoch]["batches"]
        cells = [c for r in records for c in r["epochs"][epoch]["cells"]]
        assert len(cells) == len(set(cells)) and 1200 - len(cells) < 2 * 8  # without replacement: once
        share = sum(c.startswith("syn") for c in cells) / len(cells)
        assert abs(share - 2 / 3) < 0.02
        # the same cells as the in-process simulation of the same mix: a pure function of its inputs
        sim = serve_sim(spec, epoch)
        assert sorted(cells) == sorted(sim)
        expected.append(set(cells))
    assert expected[0] != expected[1]  # a new draw each epoch


def serve_sim(spec: dict, epoch: int) -> list[str]:
    spec = dict(spec)
    cells = []
    for rank in range(2):
        ds = ShardedCellDataset(
            spec["path"],
            batch_size=8,
            context_length=64,
            seed=2,
            rank=rank,
            world_size=2,
            return_cell_ids=True,
            **{k: v for k, v in spec.items() if k != "path"},
        )
        ds.set_epoch(epoch)
        cells += [c for b in ds for c in b["cell_id"]]
    return cells


# -- properties of the pure plan ------------------------------------------------------------------------
@settings(max_examples=60, deadline=None)
@given(
    shards=st.lists(st.integers(1, 60), min_size=1, max_size=8),
    factor=st.floats(0.1, 3.0),
    replacement=st.booleans(),
    world=st.integers(1, 4),
    workers=st.integers(0, 2),
    seed=st.integers(0, 1000),
)
def test_sampled_epoch_is_served_as_drawn_and_equally(shards, factor, replacement, world, workers, seed):
    """Whatever the draw, the slots together serve exactly the drawn multiset (but the stated remainder),
    in equal whole batches, and each unit reads ascending cells of one shard."""
    shard_cells = np.array(shards)
    n = int(shard_cells.sum())
    rng = np.random.default_rng(seed)
    weights = rng.random(n) * (rng.random(n) > 0.2) + 1e-3
    counts = draw_counts(max(1, int(factor * n)), weights, n, replacement=replacement, rng=rng)
    if not replacement:
        assert counts.max() - counts[weights > 0].min() <= 1  # without replacement: n // N or one more
    plan = sampled_plan(shard_cells, counts, seed=seed, epoch=1)
    assert plan.n_cells == counts.sum()
    starts = np.concatenate([[0], np.cumsum(shard_cells)])
    slots = plan_slots(plan.n_cells, world_size=world, num_workers=workers, batch_size=3, seed=seed, epoch=1)
    assert len({s.n_cells for s in slots}) == 1 and slots[0].n_cells % 3 == 0
    served = []
    for slot in slots:
        shard, cell, pad = plan.locate(slot.to_sequence(stream_positions(slot, slot.n_cells)))
        served.append((starts[shard] + cell)[~pad])
    got = np.bincount(np.concatenate(served), minlength=n) if served else np.zeros(n, np.int64)
    assert (got <= counts).all() and counts.sum() - got.sum() < len(slots) * 3  # only the drop remainder
    for u in range(len(plan.shard_order)):
        c = plan.cells[plan._starts[u] : plan._starts[u + 1]]
        assert (np.diff(c) > 0).all() and c.max() < shard_cells[plan.shard_order[u]]


def test_repeats_served_from_memory_are_the_cells_read_again(sets):
    """Weights with replacement serve rare cells many times: the repeat cache holds them between uses;
    batches are identical with the cache off, on, or on with a budget too small to hold them all."""
    kw = {
        "batch_size": B,
        "context_length": 64,
        "rank": 0,
        "world_size": 1,
        "return_cell_ids": True,
        "replacement": True,
        "num_samples": 3000,
        "weighting": {"column": "cell_type"},
    }
    runs = {}
    for budget in (0, 1 << 30, 200_000):
        ds = ShardedCellDataset(str(sets["A"]), repeat_cache_bytes=budget, **kw)
        runs[budget] = [(b["cell_id"], b["input_ids"]) for b in ds]
        if budget:
            assert ds.repeat_cache is not None and (ds.repeat_cache.hits > 0 or budget == 200_000)
            assert (ds.repeat_cache.misses > 0) == (budget == 200_000) and ds.repeat_cache.bytes <= budget
            assert not ds.repeat_cache.cells and not ds.repeat_cache.left  # everything held was used up
    for budget in (1 << 30, 200_000):
        for (ids_a, x_a), (ids_b, x_b) in zip(runs[0], runs[budget], strict=True):
            assert ids_a == ids_b and torch.equal(x_a, x_b)


def test_report_refuses_a_mix_run_clearly(tmp_path):
    from training.errors import ConfigError
    from training.evaluate.report import run_report

    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "config.yaml").write_text("data:\n  path: null\n  streams: [{path: a}, {path: b}]\n")
    (tmp_path / "history.csv").write_text("step,train/loss\n0,1.0\n")
    with pytest.raises(ConfigError, match=r"trained on data\.streams"):
        run_report(tmp_path)


def test_exact_groups_over_a_large_corpus_warn_and_name_the_bounded_pool(sets, monkeypatch):
    import shards.loading.modes.grouped_exact as exact

    monkeypatch.setattr(exact, "LARGE_EXACT_GROUPS", 100)
    kw = {"batch_size": B, "context_length": 64, "group_by": "cell_type"}
    with pytest.warns(UserWarning, match="leave group_exact off"):
        ShardedCellDataset(str(sets["A"]), group_exact=True, **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert ShardedCellDataset(str(sets["A"]), **kw).mode.name == "grouped-bounded"  # the default
        ShardedCellDataset(str(sets["A"]), group_pool_cells=64, **kw)


def test_a_new_sampling_mode_is_one_module_and_one_table_row(sets, monkeypatch):
    """docs/SAMPLING.md's walk-through as written: a mode built on ``ModeBase`` and put first in
    ``CHOOSERS`` is what the dataset plans, serves (every cell once, equal counts on every rank) and
    records in a saved state's identity."""
    from shards.loading import modes
    from shards.plan.epoch import plan_epoch

    class Stored(modes.ModeBase):
        name = "stored"

        def __init__(self, reader, streams, config):
            super().__init__(config)
            self.reader = reader

        def plan_epoch(self, epoch):
            plan, _ = plan_epoch(
                self.reader.shard_cells, world_size=1, num_workers=0, batch_size=1, seed=self.config.seed, epoch=epoch
            )
            return dataclasses.replace(plan, shard_order=np.arange(len(plan.shard_cells)))  # shard 0, 1, ...

        def identity(self):
            return {**super().identity(), "stored_order": True}

    plain = ShardedCellDataset(str(sets["A"]), batch_size=B, context_length=64, seed=4, rank=0, world_size=1)
    monkeypatch.setattr(modes, "CHOOSERS", (("stored", lambda c, s: True, Stored), *modes.CHOOSERS))
    ds = ShardedCellDataset(str(sets["A"]), batch_size=B, context_length=64, seed=4, rank=0, world_size=1)
    assert ds.mode.name == "stored" and '"stored_order": true' in ds.identity(1, 0).mix
    stored = ds.plan(0, ds.topology())[0].shard_order
    assert stored.tolist() == list(range(len(stored))) != plain.plan(0, plain.topology())[0].shard_order.tolist()
    ranks = serve(str(sets["A"]), world=2, remainder="pad")
    cells = real_cells(ranks)
    assert len({len(r) for r in ranks}) == 1 and len(cells) == len(set(cells)) == n_train(sets["A"])
