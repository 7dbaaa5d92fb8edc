"""A BERT-style encoder for masked gene modelling (Geneformer/scGPT inputs).

Inputs are rank-ordered gene tokens (``<cls>`` first), so a learned position embedding encodes the rank;
optional value-bin embeddings add scGPT-style expression levels. Blocks are pre-LN and call
``scaled_dot_product_attention`` with the padding mask (fused kernels on GPU). The output head is tied
to the gene embedding and is applied only at the masked positions, which is ~15% of the tokens: the
vocabulary projection is the largest matmul of a small model, so this is where the time goes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .packed import flex_attention, packed_cell_gene_nll, packed_gene_positions, packed_mean_pool, segment_block_mask

__all__ = [
    "ATTENTIONS",
    "CellEncoder",
    "EncoderConfig",
    "cell_gene_nll",
    "extend_positions",
    "gene_positions",
    "mean_pool",
]


#: how packed batches attend (``EncoderConfig.attention``)
ATTENTIONS = ("sdpa", "flex")


@dataclass(frozen=True)
class EncoderConfig:
    """The encoder's architecture: ``model.<field>`` of a training config (``CellshardModule`` forwards its
    keyword arguments here, so each key, its default and its help are declared once, below), and the
    ``encoder`` record of every checkpoint and exported model (``training.checkpoints.load_model``
    rebuilds the network from it). ``vocab_size``, ``max_positions`` and ``value_bins`` are linked from
    the shard set and ``data.*``; ``cell_head`` from ``model.cell_loss_weight``."""

    vocab_size: int
    """Gene-embedding rows: linked from the shard set's vocabulary (``data.path``)."""
    d_model: int = 256
    """Hidden size (divisible by ``n_heads``)."""
    n_layers: int = 6
    """Transformer blocks (pre-LN)."""
    n_heads: int = 4
    """Attention heads."""
    d_ff: int | None = None
    """Feed-forward size; null means 4 * ``d_model``."""
    max_positions: int = 2048
    """Position embeddings (the longest input, ``<cls>`` and ``<eos>`` included): linked from
    ``data.context_length``."""
    value_bins: int = 0
    """scGPT-style value-bin embeddings (0 = off): linked from ``data.value_bins``."""
    dropout: float = 0.0
    """Dropout in the blocks (attention and residual branches)."""
    norm_eps: float = 1e-5
    """LayerNorm epsilon."""
    attention: str = "sdpa"
    """Packed batches' attention: ``sdpa`` (``scaled_dot_product_attention`` with the block-diagonal mask:
    every row's full attention is computed, then masked) or ``flex`` (``flex_attention`` with a block
    mask: only the blocks inside a cell are computed; compiled; no attention dropout; trains on CUDA only,
    as FlexAttention has no CPU backward). Padded batches always use ``sdpa``."""
    cell_head: bool = False
    """A head that predicts the cell's genes from its mean-pooled embedding: set by
    ``model.cell_loss_weight`` > 0."""

    def __post_init__(self) -> None:
        for name in ("vocab_size", "d_model", "n_layers", "n_heads", "max_positions"):
            if not (isinstance(getattr(self, name), int) and getattr(self, name) >= 1):
                raise ValueError(f"{name}={getattr(self, name)!r}: use a whole number >= 1")
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model={self.d_model} is not divisible by n_heads={self.n_heads}")
        if self.d_ff is not None and self.d_ff < 1:
            raise ValueError(f"d_ff={self.d_ff}: use a whole number >= 1, or null for 4 * d_model")
        if self.value_bins < 0:
            raise ValueError(f"value_bins={self.value_bins}: use 0 (off) or a positive number of bins")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout={self.dropout}: use a probability in [0, 1)")
        if self.attention not in ATTENTIONS:
            raise ValueError(f"attention={self.attention!r}: choose one of {', '.join(ATTENTIONS)}")
        if self.attention == "flex" and self.dropout > 0:
            raise ValueError(f"attention=flex takes no dropout: set model.dropout 0 (it is {self.dropout}) or use sdpa")

    @property
    def ffn(self) -> int:
        return self.d_ff or 4 * self.d_model


class Block(nn.Module):
    def __init__(self, cfg: EncoderConfig) -> None:
        super().__init__()
        self.n_heads = cfg.n_heads
        self.norm1 = nn.LayerNorm(cfg.d_model, eps=cfg.norm_eps)
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model)
        self.norm2 = nn.LayerNorm(cfg.d_model, eps=cfg.norm_eps)
        self.fc1 = nn.Linear(cfg.d_model, cfg.ffn)
        self.fc2 = nn.Linear(cfg.ffn, cfg.d_model)
        self.dropout = cfg.dropout

    def forward(self, x: torch.Tensor, attn_mask) -> torch.Tensor:
        """``attn_mask``: a boolean mask for SDPA, or a flex ``BlockMask`` (packed, ``attention: flex``)."""
        b, n, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, n, 3, self.n_heads, d // self.n_heads).permute(2, 0, 3, 1, 4)
        p = self.dropout if self.training else 0.0
        if isinstance(attn_mask, torch.Tensor):
            a = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=p)
        else:
            a = flex_attention(q, k, v, attn_mask)
        x = x + F.dropout(self.proj(a.transpose(1, 2).reshape(b, n, d)), p, self.training)
        h = self.fc2(F.gelu(self.fc1(self.norm2(x))))
        return x + F.dropout(h, p, self.training)


class CellEncoder(nn.Module):
    def __init__(self, cfg: EncoderConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self._compiled: dict[str, object] = {}  # compile_trunk's function (not a module: no state)
        self.genes = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.positions = nn.Embedding(cfg.max_positions, cfg.d_model)
        self.values = nn.Embedding(cfg.value_bins, cfg.d_model) if cfg.value_bins else None
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.norm = nn.LayerNorm(cfg.d_model, eps=cfg.norm_eps)
        self.head_transform = nn.Linear(cfg.d_model, cfg.d_model)
        self.head_norm = nn.LayerNorm(cfg.d_model, eps=cfg.norm_eps)
        self.head_bias = nn.Parameter(torch.zeros(cfg.vocab_size))
        if cfg.cell_head:
            self.cell_transform = nn.Linear(cfg.d_model, cfg.d_model)
            self.cell_norm = nn.LayerNorm(cfg.d_model, eps=cfg.norm_eps)
            self.cell_bias = nn.Parameter(torch.zeros(cfg.vocab_size))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """BERT's initialisation: N(0, 0.02) weights, zero biases, residual projections scaled by depth."""
        for name, p in self.named_parameters():
            if p.dim() >= 2:
                std = 0.02 / math.sqrt(2 * self.cfg.n_layers) if name.endswith(("proj.weight", "fc2.weight")) else 0.02
                nn.init.normal_(p, std=std)
            elif "norm" in name and name.endswith("weight"):
                nn.init.ones_(p)
            else:
                nn.init.zeros_(p)

    def encode(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        values: torch.Tensor | None = None,
        segments: torch.Tensor | None = None,
        positions: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Hidden states (rows, length, d_model) after the final norm. A packed batch (``segments``,
        ``positions``: several cells per row) embeds each token at its position inside its cell and
        lets it attend to its own cell only, so a cell's states are those it has unpacked."""
        n = input_ids.shape[1]
        if n > self.cfg.max_positions:
            raise ValueError(f"input length {n} exceeds max_positions={self.cfg.max_positions}")
        if self.values is not None and values is None:
            raise ValueError("this model embeds value bins: the batch needs 'values' (set data.value_bins)")
        blocks = None
        if segments is not None and self.cfg.attention == "flex":  # built eagerly, outside a compiled trunk
            if segments.device.type != "cuda" and torch.is_grad_enabled():
                raise ValueError(
                    "attention=flex trains on CUDA only (FlexAttention has no backward on CPU): use "
                    "attention sdpa here; flex still embeds on CPU (no gradients)"
                )
            blocks = segment_block_mask(segments)
        trunk = self._compiled.get("trunk", self._trunk)
        return trunk(input_ids, attention_mask, values, segments, positions, blocks)

    def _trunk(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        values: torch.Tensor | None,
        segments: torch.Tensor | None,
        positions: torch.Tensor | None,
        blocks=None,
    ) -> torch.Tensor:
        """The embeddings and blocks; ``blocks``: a flex ``BlockMask`` for a packed batch (else SDPA)."""
        if segments is None:
            x = self.genes(input_ids) + self.positions.weight[: input_ids.shape[1]]
            mask = attention_mask[:, None, None, :]  # keys only: padded queries are never read
        else:
            x = self.genes(input_ids) + self.positions(positions)
            if blocks is not None:
                mask = blocks
            else:  # block-diagonal: a token sees its own cell; pads (-1) see pads, so no row is all masked
                mask = (segments[:, :, None] == segments[:, None, :])[:, None]
        if self.values is not None:
            x = x + self.values(values)
        for block in self.blocks:
            x = block(x, mask)
        return self.norm(x)

    def compile_trunk(self, **options) -> None:
        """``torch.compile`` the trunk (embeddings, blocks, final norm: nearly all of a step's FLOPs). The
        heads stay eager: they run at the masked positions only, a data-dependent shape that would break
        the graph twice per step. The weights and their state-dict names do not change."""
        self._compiled["trunk"] = torch.compile(self._trunk, **options)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Vocabulary logits of selected hidden states (tied to the gene embedding)."""
        h = self.head_norm(F.gelu(self.head_transform(hidden)))
        return F.linear(h, self.genes.weight, self.head_bias)

    def cell_logits(self, pooled: torch.Tensor) -> torch.Tensor:
        """Vocabulary logits of mean-pooled cell embeddings (the cell head, tied to the gene embedding)."""
        h = self.cell_norm(F.gelu(self.cell_transform(pooled)))
        return F.linear(h, self.genes.weight, self.cell_bias)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        labels: torch.Tensor,
        values: torch.Tensor | None = None,
        segments: torch.Tensor | None = None,
        positions: torch.Tensor | None = None,
        n_cells: int | None = None,
    ) -> tuple[torch.Tensor, ...]:
        """(logits at the masked positions, the cell of each) — the head runs only where labels are set —
        and, with the cell head, each cell's mean negative log-likelihood of its own genes
        (``cell_gene_nll``). Packed batches (``segments``, ``positions``) hold ``n_cells`` cells."""
        hidden = self.encode(input_ids, attention_mask, values, segments, positions)
        where = labels >= 0
        cells = where.nonzero()[:, 0] if segments is None else segments[where]
        out = (self.logits(hidden[where]), cells)
        if not self.cfg.cell_head:
            return out
        if segments is None:
            cell = self.cell_logits(mean_pool(hidden, attention_mask))
            return (*out, cell_gene_nll(cell, input_ids, attention_mask, labels))
        if n_cells is None:
            raise ValueError("a packed batch needs n_cells (the length of its loss_weight)")
        keep = packed_gene_positions(segments, positions)
        cell = self.cell_logits(packed_mean_pool(hidden, segments, keep, n_cells))
        return (*out, packed_cell_gene_nll(cell, input_ids, segments, keep, labels))


def gene_positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """The positions that hold genes: not pads, not ``<cls>`` (first), not ``<eos>`` (last)."""
    keep = attention_mask.clone()
    keep[:, 0] = False
    keep[torch.arange(len(keep), device=keep.device), attention_mask.sum(1) - 1] = False
    return keep


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The cell embedding: the mean of the hidden states over gene positions."""
    w = gene_positions(attention_mask).unsqueeze(-1).to(hidden.dtype)
    return (hidden * w).sum(1) / w.sum(1).clamp_min(1.0)


def cell_gene_nll(
    logits: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor
) -> torch.Tensor:
    """Per cell, the mean negative log-likelihood of its genes (masked ones included, by their label)
    under the softmax of its cell logits: the embedding must say which genes the cell expresses most."""
    genes = torch.where(labels >= 0, labels, input_ids)
    keep = gene_positions(attention_mask).float()
    logp = F.log_softmax(logits.float(), dim=-1).gather(1, genes)
    return -(logp * keep).sum(1) / keep.sum(1).clamp_min(1.0)


def extend_positions(weight: torch.Tensor, n: int, mode: str = "interpolate") -> torch.Tensor:
    """Position embeddings for a new context length ``n``: ``interpolate`` (linear, keeps the learned
    curve over the longer range) or ``extend`` (copy the learned rows, new rows repeat the last one,
    so positions seen in training keep their meaning). Shorter contexts keep the first ``n`` rows."""
    old = weight.shape[0]
    if n <= old:
        return weight[:n].clone()
    if mode == "extend":
        return torch.cat([weight, weight[-1:].expand(n - old, -1)], dim=0).clone()
    if mode != "interpolate":
        raise ValueError(f"position mode {mode!r}: use interpolate or extend")
    # keep position 0 (<cls>) as it is; stretch the gene positions
    body = F.interpolate(weight[1:].T[None].float(), size=n - 1, mode="linear", align_corners=True)[0].T
    return torch.cat([weight[:1], body.to(weight.dtype)], dim=0)
