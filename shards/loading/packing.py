"""Sequence packing (``pack: true``): a batch's cells laid side by side in rows of the context length.

A padded batch computes attention and feed-forward over every pad up to its longest cell; cells carry
from a few hundred to several thousand genes, so much of a batch can be pads. Packing places the same
cells (the batch's cell selection, and so resume, is unchanged) into rows by first-fit decreasing, at
the row length that computes the fewest token slots (never more than padding), each cell keeping its
``<cls>``, its ``<eos>`` and its labels, with two new keys:

- ``segments`` (rows, width) int64: the cell (its index in ``loss_weight``) each token belongs to, -1 on
  pads; the encoder confines attention to a segment (a block-diagonal mask);
- ``positions`` (rows, width) int64: the position inside its cell (0 at ``<cls>``), restarting per cell.

The plan is computed where the cells' lengths are known on the host (``plan_packing``); the tokens are
moved by ``pack_batch`` in torch on whatever device the padded batch is on, with no reduction read back
(no host-device synchronisation), so host and device collate give the same packed batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .batch import CellBatch
from .collate import Allocator, new_buffer

__all__ = ["PACK_KEYS", "PackPlan", "pack_batch", "pack_on_host", "plan_packing"]

#: the keys a packed batch adds
PACK_KEYS = ("segments", "positions")


@dataclass(frozen=True)
class PackPlan:
    """Where each cell goes: its row and first column, the cells' token counts (specials included),
    the number of rows and their width (the fullest row's fill, at most the capacity)."""

    row: np.ndarray
    start: np.ndarray
    sizes: np.ndarray
    rows: int
    width: int

    @property
    def tokens(self) -> int:
        return int(self.sizes.sum())


def plan_packing(sizes: np.ndarray, capacity: int) -> PackPlan:
    """First-fit decreasing (cells by size, longest first, ties by batch order, each into the first row
    with room) at the row length, between the longest cell and ``capacity``, that computes the fewest
    token slots (rows x width). Rows are as wide as the fullest one, so packing to the whole context
    can cost more than padding when a batch's cells are short (two rows of 4,096 for eight cells of
    600); the candidates include the longest cell, where the plan is never worse than padding.
    Deterministic. ``sizes`` are token counts with ``<cls>`` and ``<eos>``, each at most ``capacity``."""
    sizes = np.asarray(sizes, dtype=np.int64)
    if sizes.size and int(sizes.max()) > capacity:
        raise ValueError(f"a cell of {int(sizes.max())} tokens does not fit a packed row of {capacity}")
    if not sizes.size:
        return PackPlan(sizes.copy(), sizes.copy(), sizes, 0, 0)
    order = np.argsort(-sizes, kind="stable")
    longest, total = int(sizes.max()), int(sizes.sum())
    rows_of = range(1, min(len(sizes), 16) + 1)
    candidates = sorted({capacity, longest, *(min(capacity, max(longest, -(-total // k))) for k in rows_of)})
    best = None
    for cap in candidates:
        plan = _first_fit_decreasing(sizes, order, cap)
        if best is None or plan.rows * plan.width < best.rows * best.width:
            best = plan
    return best


def _first_fit_decreasing(sizes: np.ndarray, order: np.ndarray, capacity: int) -> PackPlan:
    row = np.zeros(len(sizes), dtype=np.int64)
    start = np.zeros(len(sizes), dtype=np.int64)
    fill: list[int] = []
    for i in order.tolist():
        need = int(sizes[i])
        r = next((k for k, used in enumerate(fill) if used + need <= capacity), len(fill))
        if r == len(fill):
            fill.append(0)
        row[i], start[i] = r, fill[r]
        fill[r] += need
    return PackPlan(row, start, sizes, len(fill), max(fill, default=0))


def pack_batch(
    batch: CellBatch,
    row: torch.Tensor,
    start: torch.Tensor,
    sizes: torch.Tensor,
    rows: int,
    width: int,
    pad_id: int,
) -> CellBatch:
    """The packed twin of a padded batch (cell ``i`` has ``sizes[i]`` real tokens from column 0): its
    tokens, labels and value bins at ``row[i]``, columns ``start[i]`` on; ``pad_id`` elsewhere. Other
    keys are kept."""
    ids = batch["input_ids"]
    device = ids.device
    b, w = ids.shape
    pos = torch.arange(w, device=device, dtype=torch.int64)[None, :]
    real = pos < sizes[:, None]
    dump = rows * width  # one extra slot that takes every pad of the padded batch (then dropped)
    dest = torch.where(real, (row * width + start)[:, None] + pos, torch.full_like(pos, dump)).reshape(-1)

    def scatter(values: torch.Tensor, fill: int) -> torch.Tensor:
        out = torch.full((dump + 1,), fill, dtype=values.dtype, device=device)
        return out.scatter_(0, dest, values.reshape(-1))[:dump].view(rows, width)

    packed = {k: v for k, v in batch.items() if k not in ("input_ids", "attention_mask", "labels", "values")}
    cell = torch.arange(b, device=device, dtype=torch.int64)[:, None].expand(b, w)
    segments = scatter(cell, -1)
    packed["input_ids"] = scatter(ids, pad_id)
    packed["attention_mask"] = segments >= 0
    packed["labels"] = scatter(batch["labels"], -100)
    if "values" in batch:
        packed["values"] = scatter(batch["values"], 0)
    packed["segments"] = segments
    packed["positions"] = scatter(pos.expand(b, w), 0)
    return packed


def pack_on_host(batch: CellBatch, plan: PackPlan, pad_id: int, alloc: Allocator | None = None) -> CellBatch:
    """``pack_batch`` in a loader process, its tensors then copied into one buffer from ``alloc`` (a
    worker's shared-memory slot: one handle per batch, as for a padded batch)."""
    packed = pack_batch(
        batch,
        torch.from_numpy(plan.row),
        torch.from_numpy(plan.start),
        torch.from_numpy(plan.sizes),
        plan.rows,
        plan.width,
        pad_id,
    )
    tensors = {k: v for k, v in packed.items() if isinstance(v, torch.Tensor)}
    starts, total = {}, 0
    for key, t in tensors.items():
        starts[key] = total
        total += -(-t.numel() * t.element_size() // 8) * 8  # 8-byte aligned views
    buf = (alloc or new_buffer)(total)
    for key, t in tensors.items():
        lo, n = starts[key], t.numel() * t.element_size()
        view = buf[lo : lo + n].view(t.dtype).view(t.shape)
        view.copy_(t)
        packed[key] = view
    return packed
