"""Cell weights from a metadata column: smoothed inverse frequency or a user table, with a curriculum.

A cell of class ``g`` (its value in ``column``: ``cell_type``, ``dataset_id``, ``assay``, ...) with ``n_g``
cells in its stream weighs

- ``inverse``: ``1 / (n_g + s)``, so class ``g`` receives a share of the draws proportional to
  ``n_g / (n_g + s)`` (the ``s·n/(n+s)`` smoothing of scDataLoader, up to a constant): ``s = 0``
  flattens the classes completely; a class much larger than ``s`` is capped at ``s`` cells' worth, one
  much smaller keeps its natural frequency.
- ``table``: ``table[value]`` per cell (a multiplier; 0 excludes the class); values not in the table take
  ``default``, and with no default they are an error that names them.

Curriculum: over ``curriculum_epochs`` epochs the draw probabilities move linearly from natural (every
cell alike) to the weighted ones: ``p(e) = (1 - a) / N + a * w / sum(w)`` with ``a = min(e / k, 1)``, so
each class's expected share moves linearly too. ``SamplerEpoch`` advances it with ``set_epoch``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import ShardError

__all__ = ["SCHEMES", "Weighting", "class_weights", "curriculum_alpha", "draw_probabilities"]

SCHEMES = ("inverse", "table")
_KEYS = {"column", "scheme", "smoothing", "table", "default", "curriculum_epochs"}


@dataclass(frozen=True)
class Weighting:
    """Weights of cells by a metadata column, and a curriculum towards them."""

    column: str
    """The metadata column whose values are the classes (``cell_type``, ``dataset_id``, ``assay``, ...)."""
    scheme: str | None = None
    """``inverse`` (smoothed inverse class frequency) or ``table`` (a weight per value); default: table
    when a table is given, else inverse."""
    smoothing: float = 0.0
    """``s`` of ``inverse``: a class of ``n`` cells receives a share ∝ ``n / (n + s)`` (0: fully balanced)."""
    table: dict[str, float] = field(default_factory=dict)
    """``table``: a multiplier per value (0 excludes the class)."""
    default: float | None = None
    """``table``: the weight of values not in the table (none: such values are an error naming them)."""
    curriculum_epochs: int = 0
    """Move the draw probabilities linearly from natural (epoch 0) to weighted (epoch k); 0: weighted from
    the start."""

    def __post_init__(self) -> None:
        if not self.column:
            raise ShardError("weighting.column: required (the metadata column to weight by, e.g. cell_type)")
        table = self.table or {}
        if not isinstance(table, dict):
            raise ShardError(f"weighting.table: expected a mapping of value -> weight, got {table!r}")
        set_ = object.__setattr__
        set_(self, "column", str(self.column))
        set_(self, "scheme", str(self.scheme if self.scheme is not None else "table" if table else "inverse"))
        set_(self, "smoothing", float(self.smoothing))
        set_(self, "table", {str(k): float(v) for k, v in table.items()})
        set_(self, "default", None if self.default is None else float(self.default))
        set_(self, "curriculum_epochs", int(self.curriculum_epochs))
        self.check()

    @classmethod
    def parse(cls, spec: dict[str, Any] | Weighting, prefix: str = "weighting.") -> Weighting:
        """From a config mapping; every error names the key (``prefix`` + key) and what to set."""
        if isinstance(spec, Weighting):
            spec.check(prefix)
            return spec
        if not isinstance(spec, dict):
            raise ShardError(f"{prefix.rstrip('.')}: expected a mapping with a column, got {spec!r}")
        unknown = sorted(set(spec) - _KEYS)
        if unknown:
            raise ShardError(
                f"{prefix}{unknown[0]}: unknown key; use column, scheme, smoothing, table, default, curriculum_epochs"
            )
        try:
            return cls(**spec)
        except ShardError as exc:
            text = str(exc)
            raise ShardError(
                prefix + text.removeprefix("weighting.") if text.startswith("weighting.") else text
            ) from None

    def check(self, prefix: str = "weighting.") -> None:
        if self.scheme not in SCHEMES:
            raise ShardError(f"{prefix}scheme={self.scheme!r}: choose one of {list(SCHEMES)}")
        if not (self.smoothing >= 0 and np.isfinite(self.smoothing)):
            raise ShardError(f"{prefix}smoothing={self.smoothing}: must be >= 0 (0 = fully balanced)")
        if self.scheme == "table" and not self.table:
            raise ShardError(f"{prefix}table: scheme=table needs a table of value -> weight")
        if self.scheme == "inverse" and self.table:
            raise ShardError(f"{prefix}table: given with scheme=inverse; set scheme: table to use it")
        bad = {k: v for k, v in self.table.items() if not (v >= 0 and np.isfinite(v))}
        if bad or (self.default is not None and not (self.default >= 0 and np.isfinite(self.default))):
            raise ShardError(f"{prefix}table/default: weights must be finite and >= 0 (got {bad or self.default})")
        if self.curriculum_epochs < 0:
            raise ShardError(f"{prefix}curriculum_epochs={self.curriculum_epochs}: must be >= 0 (0 = no curriculum)")

    def as_dict(self) -> dict[str, Any]:
        return {
            "column": self.column,
            "scheme": self.scheme,
            "smoothing": self.smoothing,
            "table": dict(sorted(self.table.items())),
            "default": self.default,
            "curriculum_epochs": self.curriculum_epochs,
        }


def class_weights(weighting: Weighting, categories: np.ndarray, class_counts: np.ndarray, where: str) -> np.ndarray:
    """The weight of one cell of each class (``categories[g]`` with ``class_counts[g]`` cells)."""
    counts = np.asarray(class_counts, dtype=np.float64)
    if weighting.scheme == "inverse":
        with np.errstate(divide="ignore"):
            return np.where(counts > 0, 1.0 / (counts + weighting.smoothing), 0.0)
    values = [str(c) for c in categories]
    missing = [v for v, n in zip(values, counts, strict=True) if n > 0 and v not in weighting.table]
    if missing and weighting.default is None:
        raise ShardError(
            f"{where}: {weighting.column} values {missing[:5]} are not in weighting.table; add them "
            "or set weighting.default"
        )
    return np.array([weighting.table.get(v, weighting.default or 0.0) for v in values], dtype=np.float64)


def curriculum_alpha(epoch: int, curriculum_epochs: int) -> float:
    """How far epoch ``epoch`` is from natural (0) to fully weighted (1)."""
    if curriculum_epochs <= 0:
        return 1.0
    return min(max(epoch, 0) / curriculum_epochs, 1.0)


def draw_probabilities(codes: np.ndarray, per_class: np.ndarray, alpha: float) -> np.ndarray:
    """Per-cell draw probabilities of one stream: natural and weighted mixed by ``alpha``."""
    w = per_class[codes]
    total = w.sum()
    if total <= 0:
        raise ShardError("every cell of the stream has weight 0; check weighting.table")
    if alpha >= 1.0:
        return w / total
    return (1.0 - alpha) / len(codes) + alpha * w / total
