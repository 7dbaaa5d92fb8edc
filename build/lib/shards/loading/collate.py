"""Collate: truncate, add ``<cls>``/``<eos>``, pad, and mask, in one compiled pass (``kernels``).

Masking is a pure function of (seed, epoch, cell id): every random number is a counter-based hash of
(seed, epoch, hash(cell_id), position, stream), so it does not depend on batch composition, worker
count or resumption. Each cell gets exactly ``max(1, round(0.15 * n))`` masked gene tokens (the ones
with the smallest hash values); of those 80% become ``<mask>``, 10% a random gene, 10% stay. Special
tokens and padding are never masked. Token ids of the specials come from ``vocab.csv``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch

from ..format.vocab import Vocabulary
from . import kernels
from .batch import CellBatch
from .hashing import cell_hashes, salted

__all__ = ["Allocator", "Collator", "cell_hashes", "new_buffer", "pack"]

#: gives a batch its buffer: ``alloc(nbytes)`` -> a uint8 tensor of ``nbytes`` bytes
Allocator = Callable[[int], torch.Tensor]

_TORCH = {np.dtype(np.int64): torch.int64, np.dtype(np.bool_): torch.bool, np.dtype(np.float32): torch.float32}


def pack(arrays: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """Tensors that are views of one buffer. A DataLoader worker hands a batch to the main process
    through shared memory, one file descriptor per storage at ~0.3 ms each: one storage instead of four
    or five makes a batch cheaper to pass than to build."""
    offsets, total = {}, 0
    for key, a in arrays.items():
        offsets[key] = total
        total += -(-a.nbytes // 8) * 8  # keep every view 8-byte aligned
    buf = torch.empty(total, dtype=torch.uint8)
    raw = buf.numpy()
    out = {}
    for key, a in arrays.items():
        lo = offsets[key]
        raw[lo : lo + a.nbytes].view(a.dtype).reshape(a.shape)[...] = a
        out[key] = buf[lo : lo + a.nbytes].view(_TORCH[a.dtype]).view(a.shape)
    return out


@dataclass(frozen=True)
class Collator:
    vocab: Vocabulary
    context_length: int
    seed: int = 0
    mask_prob: float = 0.15
    value_bins: int = 0  # > 0: scGPT-style per-cell quantile bins of the counts in ``values``
    masking: bool = True  # False: inputs as they are, no labels (for embedding cells)

    def __post_init__(self) -> None:
        if self.context_length < 3:
            raise ValueError(f"context_length={self.context_length}: must be at least 3 (<cls>, a gene, <eos>)")
        if not 0 < self.mask_prob < 1:
            raise ValueError(f"mask_prob={self.mask_prob}: must be in (0, 1)")
        if self.value_bins == 1 or self.value_bins < 0:
            raise ValueError(f"value_bins={self.value_bins}: use 0 (off) or at least 2")

    def __call__(
        self,
        genes: np.ndarray,
        offsets: np.ndarray,
        cell_ids: np.ndarray,
        is_pad: np.ndarray,
        epoch: int,
        counts: np.ndarray | None = None,
        copies: np.ndarray | None = None,
        alloc: Allocator | None = None,
    ) -> CellBatch:
        """A batch from ragged cells; ``copies``: which serving of its cell each row is in the epoch (a
        sampled epoch's repeats): copy ``k > 0`` of a cell gets masks and bins of its own. ``alloc``
        gives the batch's buffer (a worker's shared-memory slot, ``transport``)."""
        offsets = np.ascontiguousarray(offsets, dtype=np.int64)
        b = len(offsets) - 1
        lengths = np.minimum(np.diff(offsets), self.context_length - 2)
        width = int(lengths.max(initial=0)) + 2
        if self.value_bins and counts is None:
            raise ValueError("value_bins needs the counts")
        out, views = _batch_buffer(b, width, bool(self.value_bins), alloc)
        cells = salted(cell_hashes(cell_ids), copies)
        genes = np.ascontiguousarray(genes, dtype=np.int32)
        counts = np.ascontiguousarray(counts if counts is not None else genes[:0], dtype=np.int32)
        kernels.collate_into(
            genes,
            counts,
            offsets,
            cells.astype(np.uint64, copy=False),
            np.ascontiguousarray(is_pad, dtype=np.bool_),
            int(self.seed),
            int(epoch),
            int(self.context_length),
            float(self.mask_prob),
            self._special,
            self._gene_ids,
            bool(self.masking),
            self._edges_q,
            views["input_ids"],
            views["attention_mask"],
            views["labels"],
            views["loss_weight"],
            views.get("values", _NO_VALUES),
        )
        return CellBatch(**out)

    @cached_property
    def _special(self) -> np.ndarray:
        sp = self.vocab.special
        return np.array([sp["<pad>"], sp["<mask>"], sp["<cls>"], sp["<eos>"]], dtype=np.int64)

    @cached_property
    def _gene_ids(self) -> np.ndarray:
        return np.ascontiguousarray(self.vocab.tokens, dtype=np.int64)

    @cached_property
    def _edges_q(self) -> np.ndarray:
        return np.linspace(0, 1, self.value_bins - 1) if self.value_bins else np.zeros(0)


_NO_VALUES = np.zeros((0, 0), dtype=np.int64)


def new_buffer(nbytes: int) -> torch.Tensor:
    """A batch's buffer where no worker slot is given: ordinary memory."""
    return torch.empty(nbytes, dtype=torch.uint8)


def _batch_buffer(
    b: int, width: int, values: bool, alloc: Allocator | None = None
) -> tuple[dict[str, torch.Tensor], dict[str, np.ndarray]]:
    """The batch's tensors as views of one buffer (one shared-memory handle to pass a batch between
    processes), and numpy views of the same memory for the kernel to fill."""
    shapes = {
        "input_ids": ((b, width), np.int64),
        "attention_mask": ((b, width), np.bool_),
        "labels": ((b, width), np.int64),
        "loss_weight": ((b,), np.float32),
    }
    if values:
        shapes["values"] = ((b, width), np.int64)
    starts, total = {}, 0
    for key, (shape, dtype) in shapes.items():
        starts[key] = total
        total += -(-int(np.prod(shape)) * np.dtype(dtype).itemsize // 8) * 8  # 8-byte aligned views
    buf = (alloc or new_buffer)(total)
    raw = buf.numpy()
    tensors, arrays = {}, {}
    for key, (shape, dtype) in shapes.items():
        lo, nbytes = starts[key], int(np.prod(shape)) * np.dtype(dtype).itemsize
        arrays[key] = raw[lo : lo + nbytes].view(dtype).reshape(shape)
        tensors[key] = buf[lo : lo + nbytes].view(_TORCH[np.dtype(dtype)]).view(shape)
    return tensors, arrays
