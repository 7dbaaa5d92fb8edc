"""``CellBatch``: the one batch type the host collator, the device collator and the training module share.

A batch stays a plain ``dict`` of tensors (what DataLoader workers pass through shared memory, what
Lightning moves to a device and what users index), typed here once so that every producer and consumer
agrees on its keys, shapes and dtypes. ``RaggedBatch`` is what the loader yields with
``collate_on="device"``: the cells in one buffer, padded and masked on the accelerator into a
``CellBatch`` (``DeviceCollator``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypedDict

if TYPE_CHECKING:
    import torch

__all__ = ["BATCH_KEYS", "CellBatch", "RaggedBatch"]


class CellBatch(TypedDict, total=False):
    """A padded, masked batch of ``b`` cells of ``width`` tokens (``<cls>`` genes ``<eos>`` pads)."""

    input_ids: torch.Tensor
    """(b, width) int64: token ids; masked positions hold ``<mask>``, a random gene or the gene itself."""
    attention_mask: torch.Tensor
    """(b, width) bool: True on real tokens."""
    labels: torch.Tensor
    """(b, width) int64: the original gene at masked positions, -100 elsewhere."""
    loss_weight: torch.Tensor
    """(b,) float32: 1, or 0 for a padded repeat or a skipped shard's placeholder."""
    values: torch.Tensor
    """(b, width) int64: scGPT-style value bins (``value_bins`` > 0 only)."""
    cell_id: list[str]
    """The cells' ids, in batch order (``return_cell_ids``)."""
    obs: dict[str, Any]
    """Requested metadata columns (``obs_columns``): lists, numeric ones 1-D tensors."""
    segments: torch.Tensor
    """Packed batches (``pack``) only, then ``input_ids`` & co. are (rows, width): (rows, width) int64, the
    cell (index into ``loss_weight``) of each token, -1 on pads."""
    positions: torch.Tensor
    """Packed batches only: (rows, width) int64, each token's position inside its cell (0 at ``<cls>``)."""


#: the keys every CellBatch has
BATCH_KEYS = ("input_ids", "attention_mask", "labels", "loss_weight")


class RaggedBatch(TypedDict, total=False):
    """The cells of a batch in one uint8 buffer (``collate_on="device"``), with its layout."""

    ragged: torch.Tensor
    ragged_layout: tuple[tuple[str, str, tuple[int, ...], int], ...]
    epoch: int
    width: int
    longest: int
    pack_rows: int
    pack_width: int
    cell_id: list[str]
    obs: dict[str, Any]
