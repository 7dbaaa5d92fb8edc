"""The model: the masked-gene-model encoder (``encoder``), its FLOP count and peak-FLOPs table (``flops``),
and the optimizer and schedule factories (``optim``)."""

from .encoder import CellEncoder, EncoderConfig, extend_positions
from .flops import PEAK_TFLOPS, peak_flops, train_flops
from .optim import OptimizerConfig, SchedulerConfig, build_optimizer, build_scheduler, param_groups

__all__ = [
    "PEAK_TFLOPS",
    "CellEncoder",
    "EncoderConfig",
    "OptimizerConfig",
    "SchedulerConfig",
    "build_optimizer",
    "build_scheduler",
    "extend_positions",
    "param_groups",
    "peak_flops",
    "train_flops",
]
