"""cellshard's training stage: a masked-gene-model encoder trained with Lightning on shard sets.

``model`` (the encoder, FLOPs, optimizers), ``fit`` (the module, data module, callbacks, strategies and
the CLI), ``evaluate`` (embeddings, probe, baselines, reports) and ``tools`` (``embed``/``export``/``report``).
Every public name loads on first use: ``import training`` imports neither torch nor Lightning until a
name that needs them is used (``training.load_encoder``, ``training.CellshardModule``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from shards.lazy import lazy_namespace

from .errors import ConfigError

if TYPE_CHECKING:  # for type checkers and IDEs; at run time each name loads on first use
    from .evaluate.probe import LinearProbe, linear_probe
    from .fit.callbacks import GradNormMonitor, SamplerEpoch, ThroughputMonitor
    from .fit.data import CellDataModule
    from .fit.module import CellshardModule
    from .model import CellEncoder, EncoderConfig, peak_flops, train_flops
    from .pretrained import PretrainedEncoder, load_encoder

#: each public name and the module that defines it
_EXPORTS = {
    "CellDataModule": ".fit.data",
    "CellEncoder": ".model",
    "CellshardModule": ".fit.module",
    "EncoderConfig": ".model",
    "GradNormMonitor": ".fit.callbacks",
    "LinearProbe": ".evaluate.probe",
    "PretrainedEncoder": ".pretrained",
    "SamplerEpoch": ".fit.callbacks",
    "ThroughputMonitor": ".fit.callbacks",
    "linear_probe": ".evaluate.probe",
    "load_encoder": ".pretrained",
    "peak_flops": ".model",
    "train_flops": ".model",
}

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


__getattr__, __dir__ = lazy_namespace(__name__, _EXPORTS)
