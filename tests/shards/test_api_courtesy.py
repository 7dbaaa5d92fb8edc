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


def _metadata_by_id(path) -> dict[str, dict]:
    from shards.loading.readers import ShardSetReader

    reader = ShardSetReader(str(path), "train")
    import pandas as pd

    table = pd.concat([reader.metadata(i) for i in range(len(reader.shards))]).set_index("cell_id")
    return table.to_dict("index")


@pytest.mark.parametrize("mode", MODES, ids=list(MODES))
def test_obs_columns_follow_each_cell(zarr_set, mode):
    """``batch["obs"]`` holds each served cell's own metadata, in batch order, in every batching mode."""
    truth = _metadata_by_id(zarr_set)
    opts = {"batch_size": 16, "context_length": 64, "rank": 1, "world_size": 2, "return_cell_ids": True}
    ds = ShardedCellDataset(zarr_set, obs_columns=["cell_type", "donor_id", "n_genes"], **opts, **MODES[mode])
    checked = 0
    for batch in ds:
        obs = batch["obs"]
        assert len(obs["cell_type"]) == len(batch["cell_id"]) == len(obs["n_genes"])
        assert obs["n_genes"].dtype.is_floating_point is False
        for i, cell in enumerate(batch["cell_id"]):
            row = truth[cell]
            assert obs["cell_type"][i] == row["cell_type"] and obs["donor_id"][i] == row["donor_id"]
            assert int(obs["n_genes"][i]) == row["n_genes"]
            checked += 1
    assert checked > 0


def test_obs_columns_reach_the_main_process_through_workers(zarr_set):
    truth = _metadata_by_id(zarr_set)
    ds = ShardedCellDataset(
        zarr_set,
        batch_size=16,
        context_length=64,
        rank=0,
        world_size=1,
        obs_columns=["cell_type"],
        return_cell_ids=True,
    )
    batch = next(iter(CellDataLoader(ds, num_workers=1)))
    assert batch["obs"]["cell_type"] == [truth[c]["cell_type"] for c in batch["cell_id"]]


def test_obs_columns_unknown_is_refused_with_the_stored_ones(zarr_set):
    from shards.errors import ShardError

    with pytest.raises(ShardError, match=r"obs_columns: 'batch' is not stored .*cell_type"):
        ShardedCellDataset(zarr_set, batch_size=16, context_length=64, rank=0, world_size=1, obs_columns=["batch"])


def test_cell_sources_reads_both_id_forms_back_to_their_inputs():
    """A cell id maps back to its input by the form the manifest records inputs in (files by ``path``,
    experiments by ``uri``), whatever the source's kind is called; an unknown file stem is one error."""
    from shards.format.provenance import cell_sources

    files = {"kind": "anything", "inputs": [{"path": "/d/a.h5ad"}, {"path": "/d/b.h5ad"}]}
    got = cell_sources(["b:AAAC-1", "a:x:y"], files)
    assert got.to_dict("list") == {"source_file": ["/d/b.h5ad", "/d/a.h5ad"], "obs_name": ["AAAC-1", "x:y"]}
    soma = {"kind": "census", "inputs": [{"uri": "s3://c/2025"}]}
    got = cell_sources(["census:2025-01-30:17", "census:2025-01-30:4"], soma)
    assert got["source_uri"].tolist() == ["s3://c/2025"] * 2 and got["soma_joinid"].tolist() == [17, 4]
    with pytest.raises(ValueError, match="'c:1': its file stem is not one of the set's inputs"):
        cell_sources(["c:1"], files)
