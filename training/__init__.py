"""cellshard's training stage: a masked-gene-model encoder trained with Lightning on shard sets.

``model`` (the encoder, FLOPs, optimizers), ``fit`` (the module, data module, callbacks, strategies and
the CLI), ``evaluate`` (embeddings, probe, baselines, reports) and ``tools`` (``embed``/``export``/``report``).
"""

from .errors import ConfigError
from .evaluate.probe import LinearProbe, linear_probe
from .fit.callbacks import GradNormMonitor, SamplerEpoch, ThroughputMonitor
from .fit.data import CellDataModule
from .fit.module import CellshardModule
from .model import CellEncoder, EncoderConfig, peak_flops, train_flops
from .pretrained import PretrainedEncoder, load_encoder

__all__ = [
    "CellDataModule",
    "CellEncoder",
    "CellshardModule",
    "ConfigError",
    "EncoderConfig",
    "GradNormMonitor",
    "LinearProbe",
    "PretrainedEncoder",
    "SamplerEpoch",
    "ThroughputMonitor",
    "linear_probe",
    "load_encoder",
    "peak_flops",
    "train_flops",
]
