"""The encoder's side of sequence packing (``data.pack``): several cells per row, each on its own.

A packed batch carries ``segments`` (each token's cell, -1 on pads) and ``positions`` (restarting per
cell). Attention is confined to a segment, either by SDPA with the block-diagonal boolean mask (built
in ``CellEncoder``) or by ``flex_attention`` with a block mask (``segment_block_mask``: blocks outside
every cell are skipped, not computed and masked); pooling and the cell objective gather each cell's
own tokens (``packed_mean_pool``, ``packed_cell_gene_nll``), with index_add on the batch's device and no
read back to the host.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

__all__ = [
    "flex_attention",
    "packed_cell_gene_nll",
    "packed_gene_positions",
    "packed_mean_pool",
    "segment_block_mask",
]


@functools.cache
def _compiled_flex():
    """``flex_attention``, compiled once per process (uncompiled it is a slow reference implementation)."""
    from torch.nn.attention.flex_attention import flex_attention as flex

    return torch.compile(flex)


def flex_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, block_mask) -> torch.Tensor:
    return _compiled_flex()(q, k, v, block_mask=block_mask)


def segment_block_mask(segments: torch.Tensor):
    """A ``flex_attention`` block mask confining each token to its own segment (pads, -1, to pads)."""
    from torch.nn.attention.flex_attention import create_block_mask

    def same_cell(b, h, q, kv):
        return segments[b, q] == segments[b, kv]

    rows, n = segments.shape
    return create_block_mask(same_cell, rows, None, n, n, device=segments.device)


def packed_gene_positions(segments: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """``gene_positions`` of a packed batch: a cell's tokens but its first (``<cls>``) and its last
    (``<eos>``: the token after it belongs to another cell, or the row ends)."""
    following = torch.cat([segments[:, 1:], torch.full_like(segments[:, :1], -1)], dim=1)
    return (segments >= 0) & (positions > 0) & (following == segments)


def packed_mean_pool(hidden: torch.Tensor, segments: torch.Tensor, keep: torch.Tensor, n_cells: int) -> torch.Tensor:
    """Each cell's mean hidden state over its gene positions (``mean_pool`` of a packed batch)."""
    d = hidden.shape[-1]
    index = segments.clamp(min=0).reshape(-1)
    w = keep.reshape(-1, 1).to(hidden.dtype)
    sums = hidden.new_zeros(n_cells, d).index_add_(0, index, hidden.reshape(-1, d) * w)
    count = hidden.new_zeros(n_cells).index_add_(0, index, w[:, 0])
    return sums / count.clamp_min(1.0)[:, None]


def packed_cell_gene_nll(
    logits: torch.Tensor, input_ids: torch.Tensor, segments: torch.Tensor, keep: torch.Tensor, labels: torch.Tensor
) -> torch.Tensor:
    """``cell_gene_nll`` of a packed batch: per cell, over the tokens of its own segment."""
    genes = torch.where(labels >= 0, labels, input_ids).reshape(-1)
    cell = segments.clamp(min=0).reshape(-1)
    logp = F.log_softmax(logits.float(), dim=-1)[cell, genes]
    w = keep.reshape(-1).float()
    n = logits.shape[0]
    total = logp.new_zeros(n).index_add_(0, cell, logp * w)
    count = logp.new_zeros(n).index_add_(0, cell, w)
    return -total / count.clamp_min(1.0)
