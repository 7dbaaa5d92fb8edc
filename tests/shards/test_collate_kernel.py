"""The fused collate kernel equals the NumPy collator it replaced, bit for bit, over random batches:
seeds, epochs, contexts from 3 to 2,048 (truncation), value bins, unmasked embedding batches, padded
repeats, copies of a cell, empty cells (as panels and skipped shards leave them), ties in the counts."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from shards.format.vocab import Vocabulary
from shards.loading.collate import Collator
from tests.shards.collate_reference import reference_collate


def _vocab(n: int = 4000, scconcept: bool = False) -> Vocabulary:
    special = (
        {"<cls>": 0, "<pad>": 1, "<mask>": 2, "<eos>": 3}
        if scconcept
        else {"<pad>": 0, "<mask>": 1, "<cls>": 2, "<eos>": 3}
    )
    ids = tuple(f"ENSG{i:011d}" for i in range(n))
    return Vocabulary(ids, ids, np.arange(4, 4 + n, dtype=np.int64), special)


def _batch(rng: np.random.Generator, b: int, vocab: Vocabulary, long: bool):
    lengths = rng.integers(0, 3000 if long else 60, size=b)
    lengths[rng.random(b) < 0.1] = 0  # empty cells
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    genes = np.concatenate([rng.choice(vocab.tokens, size=n, replace=False) for n in lengths]).astype(np.int32)
    counts = rng.choice([1, 1, 1, 2, 2, 3, 5, 8, 40], size=len(genes)).astype(np.int32)  # many ties
    wide = rng.random(len(genes)) < 0.02  # a few counts far out: some cells sort and search, not count
    counts[wide] = rng.integers(5_000, 2_000_000, size=int(wide.sum()))
    ids = np.array([f"ds{rng.integers(3)}:cell{i}" for i in rng.integers(0, 10_000, size=b)], dtype=object)
    pads = rng.random(b) < 0.2
    copies = rng.integers(0, 3, size=b) * (rng.random(b) < 0.5)
    return genes, offsets, ids, pads, counts, copies


@pytest.mark.parametrize("trial", range(24))
def test_the_kernel_equals_the_numpy_collator(trial):
    rng = np.random.default_rng([7, trial])
    vocab = _vocab(scconcept=trial % 5 == 0)
    context = [3, 4, 8, 64, 130, 2048][trial % 6]
    bins = [0, 0, 5, 51][trial % 4]
    col = Collator(vocab, context, seed=int(rng.integers(1000)), value_bins=bins, masking=trial % 7 != 3)
    genes, offsets, ids, pads, counts, copies = _batch(rng, int(rng.integers(1, 40)), vocab, long=context == 2048)
    epoch = int(rng.integers(0, 5))
    for with_copies in (None, copies):
        got = col(genes, offsets, ids, pads, epoch, counts=counts, copies=with_copies)
        want = reference_collate(col, genes, offsets, ids, pads, epoch, counts=counts, copies=with_copies)
        assert set(got) == set(want)
        for key in want:
            assert got[key].dtype == want[key].dtype and got[key].shape == want[key].shape, key
            assert torch.equal(got[key], want[key]), (key, trial)


def test_an_empty_batch_and_a_batch_of_empty_cells():
    col = Collator(_vocab(), 16, seed=1, value_bins=7)
    for offsets in (np.array([0]), np.array([0, 0, 0])):
        ids = np.array([f"c{i}" for i in range(len(offsets) - 1)], dtype=object)
        args = (np.zeros(0, np.int32), offsets, ids, np.zeros(len(ids), bool), 0)
        got, want = (
            col(*args, counts=np.zeros(0, np.int32)),
            reference_collate(col, *args, counts=np.zeros(0, np.int32)),
        )
        assert all(torch.equal(got[k], want[k]) for k in want)
