"""Training FLOPs of ``CellEncoder`` and the peak FLOP/s of common accelerators, for MFU.

The formula counts the matmuls (the FLOPs ``torch.utils.flop_counter.FlopCounterMode`` counts too;
a test checks the two agree): per layer and token ``2·(4d² + 2·d·d_ff)`` for the projections and
``4·n·d`` for attention scores and values over a padded length ``n``; the tied head ``2·d² + 2·d·V``
per masked token, and with the cell head the same once per sequence. Backward costs twice the forward.
Elementwise work (norms, GELU, softmax) is left out, as is usual for MFU.

Peak table: dense (not 2:4-sparse) tensor-core figures from NVIDIA's datasheets. Lightning's table
(``lightning.fabric.utilities.throughput``) mixes in sparse figures for some parts (H200, H100 NVL),
which would halve a reported MFU, so this small table is kept here.
"""

from __future__ import annotations

from .encoder import EncoderConfig

__all__ = ["PEAK_TFLOPS", "peak_flops", "real_flops", "train_flops"]

#: dense TFLOP/s by device and compute dtype
PEAK_TFLOPS: dict[str, dict[str, float]] = {
    "a100": {"bf16": 312.0, "fp16": 312.0, "tf32": 156.0, "fp32": 19.5},
    "h100 sxm": {"bf16": 989.4, "fp16": 989.4, "tf32": 494.7, "fp32": 66.9},
    "h100 pcie": {"bf16": 756.0, "fp16": 756.0, "tf32": 378.0, "fp32": 51.2},
    "h100 nvl": {"bf16": 835.0, "fp16": 835.0, "tf32": 417.5, "fp32": 60.0},
    "h200": {"bf16": 989.4, "fp16": 989.4, "tf32": 494.7, "fp32": 66.9},
}


def train_flops(cfg: EncoderConfig, batch: int, length: int, masked: int, cells: int | None = None) -> float:
    """FLOPs of one forward + backward over ``batch`` rows of ``length`` tokens (padded or packed) with
    ``masked`` masked tokens in all; ``cells``: how many cells the rows hold (packed: more than rows;
    the cell head runs once per cell). Attention is counted over the whole row, as SDPA computes it
    with a mask (a packed row's block-diagonal mask saves no FLOPs there: ``attention_flops`` gives
    what a block-sparse kernel would compute)."""
    d, f, tokens = cfg.d_model, cfg.ffn, batch * length
    layer = tokens * 2 * (4 * d * d + 2 * d * f) + 4 * batch * length * length * d
    n_cells = batch if cells is None else cells
    head = (masked + (n_cells if cfg.cell_head else 0)) * (2 * d * d + 2 * d * cfg.vocab_size)
    return 3.0 * (cfg.n_layers * layer + head)


def real_flops(cfg: EncoderConfig, tokens: float, squares: float, masked: float, cells: float) -> float:
    """FLOPs of the same work without a pad: each cell as a row of its own length. ``tokens``: the
    cells' tokens in all, ``squares``: the sum of each cell's length squared (attention)."""
    d, f = cfg.d_model, cfg.ffn
    layer = tokens * 2 * (4 * d * d + 2 * d * f) + 4 * squares * d
    head = (masked + (cells if cfg.cell_head else 0)) * (2 * d * d + 2 * d * cfg.vocab_size)
    return 3.0 * (cfg.n_layers * layer + head)


def _chip(name: str) -> str | None:
    n = name.lower()
    if "h200" in n:
        return "h200"
    if "h100" in n:
        return "h100 pcie" if ("pcie" in n or "hbm2e" in n) else "h100 nvl" if "nvl" in n else "h100 sxm"
    if "a100" in n:
        return "a100"
    return None


def peak_flops(device_name: str, precision: str) -> float | None:
    """Peak FLOP/s of a device (``torch.cuda.get_device_name()``) under a Lightning precision string,
    or None when the device is not in the table (then MFU is not logged)."""
    chip = _chip(device_name)
    if chip is None:
        return None
    p = str(precision)
    dtype = "bf16" if p.startswith("bf16") else "fp16" if p.startswith("16") else "tf32"
    return PEAK_TFLOPS[chip][dtype] * 1e12
