"""The cells of an epoch, as the loader reads them: every shard once, or the draws of a mix.

``EpochCells`` joins what the pure planners need (``plan.mixing``, ``plan.drawing``, ``plan.weighting``)
with what only the shard set knows: the streams' sizes and the metadata labels that weights and groups
are taken from. Weighted and with-replacement epochs plan from the per-shard label counts of
``labels.npz`` (O(shards)); a unit's cells are drawn from its shard's own labels by the process that
reads it. Grouped batches still need every cell's group: those codes are read once, in the main
process, and handed to spawned workers as shared memory (a tensor's storage).
"""

from __future__ import annotations

import dataclasses
import json
import warnings

import numpy as np
import pandas as pd
import torch

from ..errors import ShardError
from ..format.labels import LabelCounts
from ..plan.drawing import StreamDraw, drawn_plan, unit_resolver
from ..plan.epoch import EpochPlan, plan_epoch
from ..plan.mixing import Stream, run_plan, run_start, stream_counts
from ..plan.weighting import class_weights, curriculum_alpha
from .config import LoaderConfig
from .panels import PanelFilter
from .streams import MultiReader

__all__ = ["LARGE_EXACT_GROUPS", "EpochCells", "mix_identity"]

LARGE_EXACT_GROUPS = 10_000_000  # cells: past this, exact grouped batches warn (memory per process, pads)


class EpochCells:
    """Which cells each epoch serves, for one ``MultiReader`` and ``LoaderConfig``."""

    def __init__(self, reader: MultiReader, streams: list[Stream], config: LoaderConfig) -> None:
        self.reader, self.config = reader, config
        self.sampled = config.sampled or any(s.kind()[0] != "natural" for s in streams)
        if self.sampled:  # checked now, not in a worker: an impossible mix fails at construction
            stream_counts(reader.stream_sizes(), [s.kind() for s in streams], config.num_samples)
        w = config.weighting
        self.label_counts = self._label_counts(w.column) if w is not None else []
        self.group_codes = None
        if config.group_by and config.group_pool_cells is None:  # the exact schedule: every cell's group
            n = int(sum(reader.stream_sizes()))
            if n > LARGE_EXACT_GROUPS:
                warnings.warn(
                    f"group_by={config.group_by!r} over {n:,} cells: the exact schedule holds every cell's group "
                    f"in every loader process (~{4 * n / 2**20:,.0f} MB each) and pads every group's last batch "
                    "in every slot; set group_pool_cells (e.g. 16384) for a bounded pool",
                    stacklevel=2,
                )
            self.group_codes = self._codes(config.group_by)
        elif config.group_by:  # bounded: a slot reads its own shards' groups; check the column exists
            self._check_column(config.group_by, "group_by")

    def _codes(self, column: str) -> tuple[torch.Tensor, list[str]]:
        """Every cell's value of a metadata column as a code (all streams, shard after shard), and the
        values; in shared memory, so spawned workers get them without a copy or a re-read."""
        reader = self.reader
        values = np.concatenate([reader.column(i, column) for i in range(len(reader.shards))])
        missing = pd.isna(values)
        if missing.any():
            at = int(np.flatnonzero(missing)[0])
            shard = int(np.searchsorted(reader.cell_starts, at, side="right")) - 1
            raise ShardError(
                f"{reader.shards[shard]['path']}: {int(missing.sum())} cells have no {column} "
                "value; fill it at ingest or weight/group by another column"
            )
        codes, uniques = pd.factorize(values.astype(str), sort=True)
        return torch.from_numpy(codes.astype(np.int32)).share_memory_(), [str(u) for u in uniques]

    def plan(self, epoch: int) -> EpochPlan:
        """The epoch's plan: every shard once (plain), or the drawn cells of the mix (``plan.mixing``)."""
        cfg, reader = self.config, self.reader
        if not self.sampled:
            plan, _ = plan_epoch(
                reader.shard_cells, world_size=1, num_workers=0, batch_size=1, seed=cfg.seed, epoch=epoch
            )
            return plan
        sizes = reader.stream_sizes()
        wanted = stream_counts(sizes, [s.kind() for s in reader.streams], cfg.num_samples)
        if cfg.weighting is None and not cfg.replacement:  # runs: O(shards), the same epoch cell for cell
            starts = [run_start(sizes[k], np.random.default_rng([cfg.seed, epoch, 2, k])) for k in range(len(sizes))]
            shards = reader.stream_shard_counts()
            return run_plan(reader.shard_cells, shards, wanted.tolist(), starts, seed=cfg.seed, epoch=epoch)
        return self._drawn(epoch, wanted.tolist())

    def _drawn(self, epoch: int, wanted: list[int]) -> EpochPlan:
        """A weighted or with-replacement epoch, planned per shard (``plan.drawing``): O(shards) here,
        each unit's cells drawn from its shard's labels by the process that reads it."""
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
            wanted,
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
                    f"{r.shards[at]['path']}: {int(counts.missing.sum())} cells have no {column} value; fill it at "
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
                f"{self.reader.shards[shard]['path']}: {self.config.weighting.column} value {column[bad][0]!r} is not "
                "in the set's label counts (labels.npz); run `ingest verify`"
            )
        return codes

    def _check_column(self, column: str, option: str) -> None:
        for k, r in enumerate(self.reader.readers):
            entry = r.manifest.get("labels") or {}
            if column not in entry.get("columns", ()) and column not in r.metadata(0).columns:
                raise ShardError(f"{self._where(k)}: no metadata column {column!r} ({option})")

    def slot_groups(self, plan: EpochPlan, positions: np.ndarray) -> np.ndarray:
        """Group codes (local to these cells) of epoch ``positions``: each shard's group column is read
        once, for the shards these positions touch only, and coded per shard (no per-cell strings)."""
        shard, cell, _ = plan.locate(positions)
        out = np.empty(len(positions), dtype=np.int64)
        code: dict[str, int] = {}
        order = np.argsort(shard, kind="stable")
        cuts = np.flatnonzero(np.diff(shard[order])) + 1
        for part in np.split(order, cuts) if len(order) else []:
            at = int(shard[part[0]])
            column = np.asarray(self.reader.column(at, self.config.group_by))
            if pd.isna(column).any():
                raise ShardError(f"{self.reader.shards[at]['path']}: cells without a {self.config.group_by} value")
            values, inverse = np.unique(column.astype(str), return_inverse=True)
            lut = np.array([code.setdefault(v, len(code)) for v in values.tolist()], dtype=np.int64)
            out[part] = lut[inverse[cell[part]]]
        return out

    def shard_groups(self, shard: int) -> np.ndarray:
        """The group codes of one shard's cells (``group_by``)."""
        starts = self.reader.cell_starts
        return self.group_codes[0].numpy()[starts[shard] : starts[shard + 1]]


def mix_identity(reader: MultiReader, config: LoaderConfig, panels: PanelFilter | None, mixed: bool) -> str | None:
    """What a saved state of a mix must match (JSON), or None for one plain shard set (whose saved
    states then keep the layout they always had)."""
    if not mixed:
        return None
    doc = {
        "streams": reader.identity(),
        "num_samples": config.num_samples,
        "replacement": config.replacement,
        "group_by": config.group_by,
        **({"group_pool_cells": config.group_pool_cells} if config.group_pool_cells is not None else {}),
        "weighting": config.weighting.as_dict() if config.weighting else None,
        "panels": panels.spec if panels else None,
    }
    return json.dumps(doc, sort_keys=True)
