"""Loaders a user would pick instead of cellshard, written fairly, producing cellshard's batches.

Every baseline ends in the same ``shards.collate.Collator`` (truncate to the context, ``<cls>``/``<eos>``,
mask 15% by (seed, epoch, cell_id), pad), so all loaders emit identical batch tensors for the same cells
and the timing compares only how cells reach the collator.

- ``PerCellAnnData`` — the seeds' design (a ``TokenizedCellDataset``): a map-style ``Dataset`` over
  backed h5ad files whose ``__getitem__`` reads one cell and rank-value tokenizes it (vectorized within
  the cell), under a shuffling ``DataLoader``.
- ``plain_webdataset`` — stock ``webdataset`` over cellshard's own tar shards, with its shard shuffle and
  sample shuffle buffer, decoding the ``.npy`` members, batched into the collator.
- ``tiledbsoma_ml_loader`` — tiledbsoma-ml's ``ExperimentDataset`` over a SOMA copy of the corpus, with
  its own shuffle and I/O batching, tokenized per mini-batch with cellshard's vectorized encoder.
"""

from __future__ import annotations

import io
import json
import random
from pathlib import Path

import anndata as ad
import numpy as np
import scipy.sparse as sp
import torch
import webdataset as wds
from torch.utils.data import DataLoader, Dataset

from shards.collate import Collator
from shards.vocab import read_vocab

__all__ = ["PerCellAnnData", "collate_records", "per_cell_loader", "plain_webdataset", "tiledbsoma_ml_loader"]


def collate_records(collator: Collator, records: list[tuple[str, np.ndarray]], epoch: int = 0) -> dict:
    """``[(cell_id, genes)]`` → the collator's batch (as the shard loader calls it)."""
    lengths = np.array([len(g) for _, g in records], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    genes = np.concatenate([g for _, g in records]) if records else np.zeros(0, np.int32)
    ids = np.array([c for c, _ in records], dtype=object)
    batch = collator(genes, offsets, ids, np.zeros(len(records), dtype=bool), epoch)
    batch["cell_id"] = list(ids)
    return batch


class PerCellAnnData(Dataset):
    """One cell per ``__getitem__`` from backed h5ad files, tokenized with the shard set's vocabulary."""

    def __init__(self, files: list[Path], shard_set: Path) -> None:
        self.files = [str(f) for f in files]
        vocab = read_vocab(Path(shard_set) / "vocab.csv")
        token_of = vocab.token_of()
        medians = {}
        for line in (Path(shard_set) / "gene_medians.csv").read_text().splitlines()[1:]:
            gene, value = line.split(",")
            medians[gene] = float(value)
        self._cols: list[tuple[np.ndarray, np.ndarray]] = []
        sizes, names = [], []
        for f in self.files:
            a = ad.read_h5ad(f, backed="r")
            ids = a.var.index.to_numpy()
            token = np.array([token_of.get(g, -1) if g in medians else -1 for g in ids], dtype=np.int64)
            median = np.array([medians.get(g, np.nan) for g in ids])
            self._cols.append((token, median))
            sizes.append(a.n_obs)
            names.append((Path(f).stem + ":" + a.obs.index.astype(str)).to_numpy())
            a.file.close()
        self._starts = np.concatenate([[0], np.cumsum(sizes)])
        self.cell_ids = np.concatenate(names)
        self._open: dict[int, ad.AnnData] = {}  # opened lazily, in each worker process

    def __len__(self) -> int:
        return int(self._starts[-1])

    def __getitem__(self, i: int) -> tuple[str, np.ndarray]:
        f = int(np.searchsorted(self._starts, i, side="right") - 1)
        a = self._open.get(f)
        if a is None:
            a = self._open[f] = ad.read_h5ad(self.files[f], backed="r")
        row = a.X[i - self._starts[f]]  # one backed CSR row
        idx, counts = row.indices, row.data
        token, median = self._cols[f]
        ok = token[idx] >= 0
        idx, counts = idx[ok], counts[ok]
        value = counts / median[idx]  # the per-cell factor 10,000 / n_counts does not change the order
        tok = token[idx]
        order = np.lexsort((tok, -value))  # count/median descending, ties by token ascending
        return str(self.cell_ids[i]), tok[order].astype(np.int32)


def per_cell_loader(
    files: list[Path], shard_set: Path, batch: int, context: int, workers: int, seed: int = 0
) -> DataLoader:
    ds = PerCellAnnData(files, shard_set)
    collator = Collator(read_vocab(Path(shard_set) / "vocab.csv"), context, seed=seed)
    return DataLoader(
        ds,
        batch_size=batch,
        shuffle=True,
        generator=torch.Generator().manual_seed(seed),
        num_workers=workers,
        collate_fn=_Collate(collator),
        multiprocessing_context="spawn" if workers else None,
        persistent_workers=False,
    )


def _decode(sample: dict) -> tuple[str, np.ndarray]:
    meta = json.loads(sample["json"])
    return meta["cell_id"], np.load(io.BytesIO(sample["genes.npy"]), allow_pickle=False)


class _Collate:
    def __init__(self, collator: Collator) -> None:
        self.collator = collator

    def __call__(self, records: list) -> dict:
        return collate_records(self.collator, records)


def plain_webdataset(
    shard_set: Path, batch: int, context: int, workers: int, seed: int = 0, buffer: int = 1_000
) -> DataLoader:
    """Stock webdataset: shard shuffle, a sample shuffle buffer, our collate (train split only)."""
    manifest = json.loads((Path(shard_set) / "index.json").read_text())
    urls = [str(Path(shard_set) / s["path"]) for s in manifest["shards"] if s["split"] == "train"]
    collator = Collator(read_vocab(Path(shard_set) / "vocab.csv"), context, seed=seed)
    pipeline = (
        wds.WebDataset(
            urls,
            shardshuffle=len(urls),
            seed=seed,
            nodesplitter=wds.split_by_node,
            workersplitter=wds.split_by_worker,
            empty_check=False,
        )
        .shuffle(buffer, rng=random.Random(seed))
        .map(_decode)
        .batched(batch, collation_fn=_Collate(collator), partial=True)
    )
    return DataLoader(pipeline, batch_size=None, num_workers=workers,
                      multiprocessing_context="spawn" if workers else None)  # fmt: skip


class _SomaBatches:
    """tiledbsoma-ml mini-batches (sparse X + obs) → cellshard batches, tokenized per batch."""

    def __init__(self, dataset, col_token: np.ndarray, token_median: dict[int, float], collator: Collator) -> None:
        self.dataset, self.collator = dataset, collator
        self.col_token, self.token_median = col_token, token_median

    def __iter__(self):
        from ingest.tokenize import TokenMap, rank_value_encode

        tmap = TokenMap(self.col_token, self.token_median)
        for X, obs in self.dataset:
            csr = X.tocsr() if sp.issparse(X) else sp.csr_matrix(X)  # dense with workers (see below)
            genes, _, offsets = rank_value_encode(csr, tmap)  # vectorized over the batch
            ids = obs["observation_joinid"].astype(str).to_numpy()
            batch = self.collator(genes, offsets, ids, np.zeros(len(ids), dtype=bool), 0)
            batch["cell_id"] = list(ids)
            yield batch


class _SomaIterable(torch.utils.data.IterableDataset):
    def __init__(self, inner: _SomaBatches) -> None:
        self.inner = inner

    def __iter__(self):
        return iter(self.inner)


def tiledbsoma_ml_loader(
    experiment_uri: str, shard_set: Path, batch: int, context: int, workers: int, seed: int = 0
) -> DataLoader:
    """tiledbsoma-ml's ``ExperimentDataset`` over the SOMA copy (its own shuffle, default I/O batch 65,536)."""
    import tiledbsoma as soma
    from tiledbsoma_ml import ExperimentDataset

    vocab = read_vocab(Path(shard_set) / "vocab.csv")
    token_of = vocab.token_of()
    medians = {}
    for line in (Path(shard_set) / "gene_medians.csv").read_text().splitlines()[1:]:
        gene, value = line.split(",")
        if gene in token_of:
            medians[token_of[gene]] = float(value)
    exp = soma.Experiment.open(experiment_uri)
    var = exp.ms["RNA"].var.read(column_names=["soma_joinid", "feature_id"]).concat().to_pandas()
    col_token = np.array([token_of.get(g, -1) for g in var.sort_values("soma_joinid")["feature_id"]], dtype=np.int64)
    with exp.axis_query("RNA") as query:
        # sparse batches only without workers: tiledbsoma-ml refuses them in worker processes (torch cannot
        # pass sparse tensors between processes), so with workers its users take dense X, as here
        ds = ExperimentDataset(query, layer_name="raw", obs_column_names=["observation_joinid"], batch_size=batch,
                               shuffle=True, seed=seed, return_sparse_X=workers == 0)  # fmt: skip
    collator = Collator(vocab, context, seed=seed)
    return DataLoader(_SomaIterable(_SomaBatches(ds, col_token, medians, collator)), batch_size=None,
                      num_workers=workers, multiprocessing_context="spawn" if workers else None)  # fmt: skip
