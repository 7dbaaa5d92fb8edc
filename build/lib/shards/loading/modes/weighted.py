"""``weighted``: an epoch of drawn cells, by a metadata column's class weights and/or with replacement.

Planned per shard (``plan.drawing``) from the per-shard label counts of ``labels.npz``: O(shards) here;
a unit's cells are drawn from its shard's own labels by the process that reads it. A curriculum moves
the weights from uniform to the scheme's over ``weighting.curriculum_epochs``.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ...errors import ShardError
from ...format.labels import LabelCounts
from ...plan.drawing import StreamDraw, drawn_plan, unit_resolver
from ...plan.epoch import EpochPlan
from ...plan.mixing import Stream
from ...plan.weighting import class_weights, curriculum_alpha
from ..config import LoaderConfig
from ..streams import MultiReader
from .runs import Runs

__all__ = ["Weighted"]


class Weighted(Runs):
    """Weighted (``weighting``) or with-replacement (``replacement``) draws; each stream's share as in
    ``runs``."""

    name = "weighted"

    def __init__(self, reader: MultiReader, streams: list[Stream], config: LoaderConfig) -> None:
        super().__init__(reader, streams, config)
        w = config.weighting
        self.label_counts = self._label_counts(w.column) if w is not None else []

    def plan_epoch(self, epoch: int) -> EpochPlan:
        cfg, reader = self.config, self.reader
        draws = []
        alpha = curriculum_alpha(epoch, cfg.weighting.curriculum_epochs) if cfg.weighting is not None else 1.0
        for k, size in enumerate(reader.stream_sizes()):
            if cfg.weighting is None:
                draws.append(StreamDraw())
                continue
            counts = self.label_counts[k]
            totals = counts.totals()
            per_class = class_weights(cfg.weighting, counts.values.astype(object), totals, self._where(k))
            mass = float((per_class * totals).sum())
            if mass <= 0:
                raise ShardError(f"{self._where(k)}: every cell of the stream has weight 0; check weighting.table")
            cls = per_class / mass if alpha >= 1.0 else (1.0 - alpha) / size + alpha * per_class / mass
            draws.append(StreamDraw(counts, cls))
        plan, per_stream = drawn_plan(
            reader.shard_cells,
            reader.stream_shard_counts(),
            self.wanted(),
            draws,
            replacement=cfg.replacement,
            seed=cfg.seed,
            epoch=epoch,
            where=[self._where(k) for k in range(len(draws))],
        )
        stream_of = np.repeat(np.arange(len(draws)), reader.stream_shard_counts())
        codes_of = self.shard_classes if cfg.weighting is not None else None
        resolve = unit_resolver(plan, per_stream, stream_of, codes_of, seed=cfg.seed, epoch=epoch)
        return dataclasses.replace(plan, resolver=resolve)

    def _where(self, k: int) -> str:
        return f"stream {self.reader.names[k]} ({self.reader.readers[k].root})"

    def _label_counts(self, column: str) -> list[LabelCounts]:
        """Every stream's per-shard counts of ``column`` (``labels.npz``); a set without them, or a shard
        with cells that have no value, is an error that says what to do."""
        out = []
        for k, r in enumerate(self.reader.readers):
            counts = r.label_counts(column)
            if counts is None:
                if column not in r.metadata(0).columns:
                    raise ShardError(f"{self._where(k)}: no metadata column {column!r} to weight by (weighting.column)")
                raise ShardError(
                    f"{self._where(k)}: no per-shard counts of {column!r} (labels.npz): the set was built "
                    "before them, or the column is not categorical; rebuild it with `ingest build` to weight by it"
                )
            if counts.missing.any():
                at = int(np.flatnonzero(counts.missing)[0])
                raise ShardError(
                    f"{r.shards[at].path}: {int(counts.missing.sum())} cells have no {column} value; fill it at "
                    "ingest or weight by another column"
                )
            out.append(counts)
        return out

    def shard_classes(self, shard: int) -> np.ndarray:
        """The class codes (positions in the stream's ``labels.npz`` values) of one shard's cells."""
        k = int(np.searchsorted(np.cumsum(self.reader.stream_shard_counts()), shard, side="right"))
        values = self.label_counts[k].values
        column = np.asarray(self.reader.column(shard, self.config.weighting.column)).astype(str)
        codes = np.searchsorted(values, column)
        bad = (codes >= len(values)) | (values[np.minimum(codes, len(values) - 1)] != column)
        if bad.any():
            raise ShardError(
                f"{self.reader.shards[shard].path}: {self.config.weighting.column} value {column[bad][0]!r} is not "
                "in the set's label counts (labels.npz); run `ingest verify`"
            )
        return codes
