"""cellshard's training stage: a masked-gene-model encoder trained with Lightning on shard sets."""

from .callbacks import GradNormMonitor, SamplerEpoch, ThroughputMonitor
from .data import CellDataModule
from .errors import ConfigError
from .flops import peak_flops, train_flops
from .model import CellEncoder, EncoderConfig
from .module import CellshardModule
from .probe import LinearProbe, linear_probe

__all__ = [
    "CellDataModule",
    "CellEncoder",
    "CellshardModule",
    "ConfigError",
    "EncoderConfig",
    "GradNormMonitor",
    "LinearProbe",
    "SamplerEpoch",
    "ThroughputMonitor",
    "linear_probe",
    "peak_flops",
    "train_flops",
]
