"""Optimizer and learning-rate schedule factories (``model.optimizer`` / ``model.scheduler`` keys).

Weight decay applies to matrices only: biases, norm weights and embeddings' position rows follow
BERT practice and are not decayed. Schedules are per optimizer step. ``name`` is one of
``cosine_warmup`` (linear warm-up, cosine to ``min_lr_ratio``), ``cosine`` (no warm-up), ``linear``
(warm-up, then linear decay to ``min_lr_ratio``), ``constant``, or the name of any
``torch.optim.lr_scheduler`` class with its keyword arguments in ``kwargs`` (wrapped with a linear
warm-up when ``warmup_steps`` > 0).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError

__all__ = ["OptimizerConfig", "SchedulerConfig", "build_optimizer", "build_scheduler", "param_groups"]

OPTIMIZERS = ("adamw", "adam")
BUILTIN = ("cosine_warmup", "cosine", "linear", "constant")


@dataclass
class OptimizerConfig:
    """``model.optimizer.*``: the optimizer and its peak learning rate."""

    name: str = "adamw"
    """``adamw`` (decoupled weight decay on matrices) or ``adam`` (no weight decay)."""
    lr: float = 1e-3
    """Peak learning rate (the schedule scales it per step)."""
    weight_decay: float = 0.01
    """Decay of weight matrices (not biases, norms or position embeddings); ``adamw`` only."""
    betas: tuple[float, float] = (0.9, 0.98)
    """Adam's moment coefficients."""
    eps: float = 1e-8
    """Adam's epsilon."""

    def check(self) -> None:
        """Raise ``ConfigError`` naming the key: before a run builds anything."""
        if self.name.lower() not in OPTIMIZERS:
            raise ConfigError(f"model.optimizer.name={self.name!r}: choose one of {OPTIMIZERS}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ConfigError(f"model.optimizer.lr={self.lr}: use a learning rate > 0")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise ConfigError(f"model.optimizer.weight_decay={self.weight_decay}: use a value >= 0")
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise ConfigError(f"model.optimizer.betas={list(self.betas)}: use two values in [0, 1)")


@dataclass
class SchedulerConfig:
    """``model.scheduler.*``: the learning rate per optimizer step."""

    name: str = "cosine_warmup"
    """``cosine_warmup``, ``cosine``, ``linear``, ``constant``, or a ``torch.optim.lr_scheduler`` class name
    (its arguments in ``kwargs``)."""
    warmup_steps: int = 0
    """Linear warm-up steps from ~0 to the peak (``cosine`` has none)."""
    total_steps: int | None = None
    """The schedule's length; null means ``trainer.max_steps`` (set it to stop a longer schedule early)."""
    min_lr_ratio: float = 0.0
    """The floor of ``cosine_warmup``, ``cosine`` and ``linear``, as a fraction of the peak."""
    kwargs: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments of a ``torch.optim.lr_scheduler`` class."""

    def check(self) -> None:
        """Raise ``ConfigError`` naming the key: before a run builds anything."""
        if self.warmup_steps < 0:
            raise ConfigError(f"model.scheduler.warmup_steps={self.warmup_steps}: must be >= 0")
        if self.total_steps is not None and self.total_steps < 1:
            raise ConfigError(f"model.scheduler.total_steps={self.total_steps}: use >= 1, or null for max_steps")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ConfigError(f"model.scheduler.min_lr_ratio={self.min_lr_ratio}: use a fraction in [0, 1]")
        if self.name not in BUILTIN:
            cls = getattr(torch.optim.lr_scheduler, self.name, None)
            if not (isinstance(cls, type) and issubclass(cls, torch.optim.lr_scheduler.LRScheduler)):
                raise ConfigError(
                    f"model.scheduler.name={self.name!r}: use one of {BUILTIN} or a torch.optim.lr_scheduler "
                    "class name (e.g. StepLR, OneCycleLR)"
                )


def param_groups(module: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    decay, no_decay = [], []
    for name, p in module.named_parameters():
        if not p.requires_grad:
            continue
        (decay if p.dim() >= 2 and "positions" not in name else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(module: nn.Module, cfg: OptimizerConfig) -> torch.optim.Optimizer:
    cfg.check()
    name = cfg.name.lower()
    cls = torch.optim.AdamW if name == "adamw" else torch.optim.Adam
    groups = param_groups(module, cfg.weight_decay if name == "adamw" else 0.0)
    return cls(groups, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps)


def _warmup_cosine(warmup: int, total: int, floor: float, cosine: bool):
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        shape = 0.5 * (1 + math.cos(math.pi * progress)) if cosine else 1 - progress
        return floor + (1 - floor) * shape

    return factor


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: SchedulerConfig, max_steps: int | None):
    """A per-step scheduler. ``total_steps`` comes from the config or ``trainer.max_steps``: never from
    ``trainer.estimated_stepping_batches``, which initialises the train loader early and can keep its
    saved state from being restored (Lightning issue #20550)."""
    cfg.check()
    total = cfg.total_steps or (max_steps if max_steps and max_steps > 0 else None)
    if cfg.name == "constant":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / max(1, cfg.warmup_steps)))
    if cfg.name in ("cosine_warmup", "cosine", "linear"):
        if total is None:
            raise ConfigError(
                f"model.scheduler.name={cfg.name}: needs model.scheduler.total_steps or trainer.max_steps"
            )
        warmup = 0 if cfg.name == "cosine" else cfg.warmup_steps
        fn = _warmup_cosine(warmup, total, cfg.min_lr_ratio, cosine=cfg.name != "linear")
        return torch.optim.lr_scheduler.LambdaLR(optimizer, fn)
    cls = getattr(torch.optim.lr_scheduler, cfg.name)
    try:
        main = cls(optimizer, **cfg.kwargs)
    except TypeError as exc:
        raise ConfigError(f"model.scheduler.kwargs for {cfg.name}: {exc}") from None
    if not cfg.warmup_steps:
        return main
    warm = torch.optim.lr_scheduler.LinearLR(
        optimizer, start_factor=1.0 / cfg.warmup_steps, total_iters=cfg.warmup_steps
    )
    return torch.optim.lr_scheduler.SequentialLR(optimizer, [warm, main], milestones=[cfg.warmup_steps])
