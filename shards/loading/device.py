"""Collate on the device: the loader ships a *ragged* batch, the accelerator pads and masks it.

With ``collate_on="device"`` a loader process only reads: a batch leaves it as one buffer holding the
cells' tokens as they are stored (int32, concatenated), their offsets, the salted cell hashes, the
padded-repeat flags and, for value bins, the counts: ~4 bytes a token instead of the ~17 of a padded,
masked batch (int64 ids and labels, a bool mask), so a worker moves a quarter of the bytes through
shared memory and a host-to-device copy is one pinned buffer, sent ``non_blocking``.
``DeviceCollator`` then builds exactly what the host collator (``collate.Collator``, the compiled
kernel) builds, on whatever device the buffer is on: the same hashes (splitmix64 on int64 lanes, whose
wrapping multiply and masked right shifts give the uint64 bits), the same k smallest keys per cell, the
same 80/10/10 draws and the same scGPT bins (NumPy's linear quantiles, both-sided digitize, seeded tie
split), so both paths give bit-identical batches (``tests/shards/test_device_collate.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .batch import CellBatch, RaggedBatch
from .collate import Allocator, Collator, new_buffer
from .packing import PackPlan, pack_batch

__all__ = ["RAGGED_KEY", "DeviceCollator", "is_ragged", "pack_ragged", "ragged_views"]

#: the key of a ragged batch's buffer; ``ragged_layout`` describes the arrays in it
RAGGED_KEY = "ragged"  # RaggedBatch's buffer

_MASK64 = (1 << 64) - 1
#: what a ragged batch carries that its collated batch does not
_RAGGED_ONLY = (RAGGED_KEY, "ragged_layout", "epoch", "width", "longest", "pack_rows", "pack_width")


def _signed(x: int) -> int:
    """A uint64 value as the int64 with the same bits."""
    x &= _MASK64
    return x - (1 << 64) if x >= 1 << 63 else x


_M1, _M2, _GOLDEN = 0xBF58476D1CE4E5B9, 0x94D049BB133111EB, 0x9E3779B97F4A7C15
_M1_S, _M2_S, _GOLDEN_S = _signed(_M1), _signed(_M2), _signed(_GOLDEN)
_TOP_BIT = -(1 << 63)  # xor with it turns unsigned order into signed order
_TORCH_DTYPES = {"int32": torch.int32, "int64": torch.int64, "bool": torch.bool}


def _mix_int(x: int) -> int:
    """splitmix64's finalizer on a Python int (exact, mod 2**64)."""
    x &= _MASK64
    x = ((x ^ (x >> 30)) * _M1) & _MASK64
    x = ((x ^ (x >> 27)) * _M2) & _MASK64
    return x ^ (x >> 31)


def _shr(x: torch.Tensor, s: int) -> torch.Tensor:
    """Logical right shift of int64 lanes (``>>`` on int64 is arithmetic)."""
    return (x >> s) & ((1 << (64 - s)) - 1)


def _mix(x: torch.Tensor) -> torch.Tensor:
    x = (x ^ _shr(x, 30)) * _M1_S
    x = (x ^ _shr(x, 27)) * _M2_S
    return x ^ _shr(x, 31)


def _prefix(seed: int, epoch: int, cells: torch.Tensor, stream: int) -> torch.Tensor:
    """The position-independent part of a cell's hash chain (``kernels._prefix``)."""
    h = _mix_int(seed * _GOLDEN + stream)
    h = _mix_int(h ^ (epoch * _GOLDEN))
    return _mix(cells ^ _signed(h))


def _unit(h: torch.Tensor) -> torch.Tensor:
    return _shr(h, 11).to(torch.float64) / 9007199254740992.0  # 2**53


def pack_ragged(
    genes: np.ndarray,
    offsets: np.ndarray,
    cells: np.ndarray,
    pads: np.ndarray,
    counts: np.ndarray | None,
    *,
    epoch: int,
    context_length: int,
    alloc: Allocator | None = None,
    plan: PackPlan | None = None,
) -> RaggedBatch:
    """A ragged batch: one uint8 tensor (``RAGGED_KEY``) holding every array, its layout, the epoch and
    the padded width (known here, so the device never waits on a reduction to size the batch); with a
    packing ``plan``, its arrays too and the packed rows and width."""
    arrays = {
        "genes": np.ascontiguousarray(genes, dtype=np.int32),
        "offsets": np.ascontiguousarray(offsets, dtype=np.int64),
        "cells": np.ascontiguousarray(cells, dtype=np.uint64).view(np.int64),
        "pads": np.ascontiguousarray(pads, dtype=np.bool_),
    }
    if counts is not None:
        arrays["counts"] = np.ascontiguousarray(counts, dtype=np.int32)
    if plan is not None:
        arrays.update(pack_row=plan.row, pack_start=plan.start, pack_sizes=plan.sizes)
    layout, total = [], 0
    for name, a in arrays.items():
        layout.append((name, a.dtype.name, a.shape, total))
        total += -(-a.nbytes // 8) * 8  # 8-byte aligned views
    buf = (alloc or new_buffer)(total)
    raw = buf.numpy()
    for (_, _, _, start), a in zip(layout, arrays.values(), strict=True):
        raw[start : start + a.nbytes] = a.reshape(-1).view(np.uint8)
        raw[start + a.nbytes : start + -(-a.nbytes // 8) * 8] = 0  # alignment bytes: the buffer is deterministic
    lengths = np.diff(arrays["offsets"])
    longest = int(lengths.max(initial=0))
    batch: RaggedBatch = {
        RAGGED_KEY: buf,
        "ragged_layout": tuple(layout),
        "epoch": int(epoch),
        "width": min(longest, context_length - 2) + 2,
        "longest": longest,
    }
    if plan is not None:
        batch["pack_rows"], batch["pack_width"] = plan.rows, plan.width
    return batch


def is_ragged(batch: Any) -> bool:
    return isinstance(batch, dict) and RAGGED_KEY in batch


def ragged_views(batch: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The arrays of a ragged batch as views of its buffer, on the buffer's device."""
    buf: torch.Tensor = batch[RAGGED_KEY]
    out = {}
    for name, dtype, shape, start in batch["ragged_layout"]:
        t = _TORCH_DTYPES[dtype]
        n = int(np.prod(shape)) * torch.empty(0, dtype=t).element_size()
        out[name] = buf[start : start + n].view(t).view(shape)
    return out


@dataclass
class DeviceCollator:
    """The host collator's batches, built on the device from a ragged batch (any device torch runs on)."""

    special: tuple[int, int, int, int]  # <pad> <mask> <cls> <eos>
    gene_ids: np.ndarray  # the vocabulary's gene tokens (the 10% random replacements draw from them)
    context_length: int
    seed: int = 0
    mask_prob: float = 0.15
    value_bins: int = 0
    masking: bool = True
    _on_device: dict[torch.device, torch.Tensor] = field(default_factory=dict, repr=False)

    @classmethod
    def like(cls, collator: Collator) -> DeviceCollator:
        """The device twin of a host collator (same vocabulary, context, seed and options)."""
        sp = collator.vocab.special
        return cls(
            (sp["<pad>"], sp["<mask>"], sp["<cls>"], sp["<eos>"]),
            np.ascontiguousarray(collator.vocab.tokens, dtype=np.int64),
            collator.context_length,
            collator.seed,
            collator.mask_prob,
            collator.value_bins,
            collator.masking,
        )

    def _genes(self, device: torch.device) -> torch.Tensor:
        if device not in self._on_device:
            self._on_device[device] = torch.as_tensor(self.gene_ids).to(device)
        return self._on_device[device]

    def __call__(self, batch: RaggedBatch) -> CellBatch:
        """The padded, masked batch of a ragged one (other keys, e.g. ``cell_id``, are kept)."""
        a = ragged_views(batch)
        device = a["offsets"].device
        pad_id, mask_id, cls_id, eos_id = self.special
        offsets, genes, cells = a["offsets"], a["genes"], a["cells"]
        b, width, epoch = offsets.numel() - 1, int(batch["width"]), int(batch["epoch"])
        lengths = offsets[1:] - offsets[:-1]
        n = lengths.clamp(max=self.context_length - 2)
        pos = torch.arange(width, device=device, dtype=torch.int64)[None, :]
        is_gene = (pos >= 1) & (pos <= n[:, None])
        src = (offsets[:-1, None] + pos - 1).clamp(min=0, max=max(genes.numel() - 1, 0))
        picked = genes[src].to(torch.int64) if genes.numel() else torch.zeros_like(src)
        ids = torch.where(is_gene, picked, torch.full_like(picked, pad_id))
        ids = torch.where(pos == (n + 1)[:, None], torch.full_like(ids, eos_id), ids)
        ids[:, 0] = cls_id
        attention = pos < (n + 2)[:, None]
        labels = torch.full_like(ids, -100)
        weight = torch.where(a["pads"], 0.0, 1.0).to(torch.float32)
        out = {k: v for k, v in batch.items() if k not in _RAGGED_ONLY}
        pos_key = pos * _GOLDEN_S  # wraps as the uint64 product does
        if self.value_bins:
            longest = int(batch["longest"])
            out["values"] = self._bins(a["counts"], offsets, lengths, n, pos, pos_key, cells, epoch, longest)
        if self.masking and b:
            keys = _mix(_prefix(self.seed, epoch, cells, 0)[:, None] ^ pos_key) ^ _TOP_BIT
            keys = torch.where(is_gene, keys, torch.full_like(keys, torch.iinfo(torch.int64).max))
            k = torch.floor(self.mask_prob * n.to(torch.float64) + 0.5).to(torch.int64).clamp(min=1)
            kth = (k - 1).clamp(max=width - 1)
            threshold = torch.sort(keys, dim=1).values.gather(1, kth[:, None])
            masked = is_gene & (keys <= threshold) & (n > 0)[:, None]
            labels = torch.where(masked, ids, labels)
            v = _unit(_mix(_prefix(self.seed, epoch, cells, 1)[:, None] ^ pos_key))
            draw = _unit(_mix(_prefix(self.seed, epoch, cells, 2)[:, None] ^ pos_key))
            gene_ids = self._genes(device)
            random = gene_ids[(draw * gene_ids.numel()).to(torch.int64).clamp(max=gene_ids.numel() - 1)]
            replaced = torch.where(v < 0.8, torch.full_like(ids, mask_id), torch.where(v < 0.9, random, ids))
            ids = torch.where(masked, replaced, ids)
        out.update(input_ids=ids, attention_mask=attention, labels=labels, loss_weight=weight)
        if "pack_rows" in batch:
            rows, width = int(batch["pack_rows"]), int(batch["pack_width"])
            return pack_batch(out, a["pack_row"], a["pack_start"], a["pack_sizes"], rows, width, pad_id)
        return out

    def _bins(self, counts, offsets, lengths, n, pos, pos_key, cells, epoch: int, longest: int) -> torch.Tensor:
        """scGPT bins as ``kernels.value_bins_row`` computes them, for every cell at once: each cell's
        quantiles over *all* its counts (the context cuts only what is written), NumPy's linear method."""
        device = counts.device
        span = torch.arange(max(longest, 1), device=device, dtype=torch.int64)[None, :]
        inside = span < lengths[:, None]
        at = (offsets[:-1, None] + span).clamp(max=max(counts.numel() - 1, 0))
        full = counts[at].to(torch.float64) if counts.numel() else torch.zeros(at.shape, dtype=torch.float64)
        s = torch.sort(torch.where(inside, full, torch.full_like(full, float("inf"))), dim=1).values
        q = torch.as_tensor(np.linspace(0, 1, self.value_bins - 1), device=device)  # the host's points, exactly
        m1 = (lengths - 1).clamp(min=0)
        v = m1[:, None].to(torch.float64) * q[None, :]
        p = torch.floor(v)
        lo = p.to(torch.int64).clamp(max=s.shape[1] - 1)
        hi = (lo + 1).clamp(max=s.shape[1] - 1)
        sa, sb = s.gather(1, lo), s.gather(1, hi)
        t = v - p
        d = sb - sa
        lerp = torch.where(t >= 0.5, sb - d * (1.0 - t), sa + d * t)
        last = s.gather(1, m1[:, None]).expand_as(lerp)
        edges = torch.where(v >= m1[:, None].to(torch.float64), last, lerp).contiguous()
        src = (offsets[:-1, None] + pos - 1).clamp(min=0, max=max(counts.numel() - 1, 0))
        xs = counts[src].to(torch.float64) if counts.numel() else torch.zeros(src.shape, dtype=torch.float64)
        le = torch.searchsorted(edges, xs.contiguous(), right=True)
        lt = torch.searchsorted(edges, xs.contiguous(), right=False)
        u = _unit(_mix(_prefix(self.seed, epoch, cells, 3)[:, None] ^ pos_key))
        bins = torch.ceil(u * (lt - le).to(torch.float64) + le.to(torch.float64)).to(torch.int64)
        is_gene = (pos >= 1) & (pos <= n[:, None]) & (lengths > 0)[:, None]
        return torch.where(is_gene, bins, torch.zeros_like(bins))
