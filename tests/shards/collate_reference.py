"""The collator as it was written in NumPy before the fused kernel (``shards.loading.kernels``): the
oracle its outputs must equal bit for bit, kept here (not shipped) for the kernel's tests."""

from __future__ import annotations

import numpy as np
import torch

from shards.loading.collate import Collator, pack
from shards.loading.hashing import cell_hashes, mask_hash, salted, uniform

__all__ = ["reference_collate"]


class _Reference:
    def __call__(
        self,
        genes: np.ndarray,
        offsets: np.ndarray,
        cell_ids: np.ndarray,
        is_pad: np.ndarray,
        epoch: int,
        counts: np.ndarray | None = None,
        copies: np.ndarray | None = None,
    ) -> dict[str, torch.Tensor]:
        """A batch from ragged cells; ``copies``: which serving of its cell each row is in the epoch (a
        sampled epoch's repeats): copy ``k > 0`` of a cell gets masks and bins of its own."""
        sp = self.vocab.special
        b = len(offsets) - 1
        lengths = np.minimum(np.diff(offsets), self.context_length - 2)
        width = int(lengths.max(initial=0)) + 2
        ids = np.full((b, width), sp["<pad>"], dtype=np.int64)
        ids[:, 0] = sp["<cls>"]
        rows = np.repeat(np.arange(b), lengths)
        within = np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        ids[rows, 1 + within] = genes[np.repeat(offsets[:-1], lengths) + within]
        ids[np.arange(b), lengths + 1] = sp["<eos>"]
        cols = np.arange(width)[None, :]
        attention = cols < (lengths + 2)[:, None]
        is_gene = (cols >= 1) & (cols <= lengths[:, None])

        h = salted(cell_hashes(cell_ids), copies)
        if not self.masking:
            arrays = {
                "input_ids": ids,
                "attention_mask": attention,
                "labels": np.full_like(ids, -100),
                "loss_weight": (~np.asarray(is_pad, dtype=bool)).astype(np.float32),
            }
            if self.value_bins:
                arrays["values"] = self._bins(counts, offsets, lengths, width, h, epoch)
            return pack(arrays)
        # the k gene positions with the smallest hashes are masked: one sort per batch, no RNG state
        key = np.where(is_gene, mask_hash(self.seed, epoch, h[:, None], cols, 0), np.uint64(2**64 - 1))
        k = np.maximum(1, np.floor(self.mask_prob * lengths + 0.5)).astype(np.int64)
        kth = np.minimum(k, width) - 1  # each row's k-th smallest hash: a partition, not a full sort
        threshold = np.partition(key, np.unique(kth), axis=1)[np.arange(b), kth] if b else kth.astype(np.uint64)
        masked = is_gene & (key <= threshold[:, None])
        labels = np.where(masked, ids, -100)
        rows_m, cols_m = np.nonzero(masked)  # the 80/10/10 draws only where needed (~15% of positions)
        v = uniform(self.seed, epoch, h[rows_m], cols_m, 1)
        gene_ids = np.asarray(self.vocab.tokens, dtype=np.int64)
        draw = uniform(self.seed, epoch, h[rows_m], cols_m, 2)
        out = ids.copy()
        to_mask = v < 0.8
        out[rows_m[to_mask], cols_m[to_mask]] = sp["<mask>"]
        swap = (v >= 0.8) & (v < 0.9)
        out[rows_m[swap], cols_m[swap]] = gene_ids[(draw[swap] * len(gene_ids)).astype(np.int64)]
        arrays = {
            "input_ids": out,
            "attention_mask": attention,
            "labels": labels,
            "loss_weight": (~np.asarray(is_pad, dtype=bool)).astype(np.float32),
        }
        if self.value_bins:
            if counts is None:
                raise ValueError("value_bins needs the counts")
            arrays["values"] = self._bins(counts, offsets, lengths, width, h, epoch)
        return pack(arrays)

    def _bins(self, counts, offsets, lengths, width, h, epoch) -> np.ndarray:
        """scGPT's binning: each cell's counts digitized against its own quantiles into 1..value_bins-1;
        a value equal to an edge goes left or right by a seeded hash (scGPT draws it at random); 0 for
        specials and padding."""
        values = np.zeros((len(lengths), width), dtype=np.int64)
        cols = np.arange(width)
        for i, n in enumerate(lengths.tolist()):
            row = counts[offsets[i] : offsets[i + 1]].astype(np.float64)
            if n == 0:
                continue
            edges = np.quantile(row, np.linspace(0, 1, self.value_bins - 1))
            x = row[:n]
            left, right = np.digitize(x, edges), np.digitize(x, edges, right=True)
            u = uniform(self.seed, epoch, h[i], cols[1 : n + 1], 3)
            values[i, 1 : n + 1] = np.ceil(u * (right - left) + left).astype(np.int64)
        return values


def reference_collate(collator: Collator, genes, offsets, cell_ids, is_pad, epoch, counts=None, copies=None):
    """What ``collator(...)`` returned before the kernel, for the same inputs."""
    r = _Reference()
    fields = ("vocab", "context_length", "seed", "mask_prob", "value_bins", "masking")
    r.__dict__.update({f: getattr(collator, f) for f in fields})
    return _Reference.__call__(r, genes, offsets, cell_ids, is_pad, epoch, counts=counts, copies=copies)
