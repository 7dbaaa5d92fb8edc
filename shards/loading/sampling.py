"""The cells of an epoch, as the loader reads them: every shard once, or the draws of a mix.

``EpochCells`` joins what the pure planners need (``plan.mixing``, ``plan.weighting``) with what only the
shard set knows: the streams' sizes and the metadata labels that weights and groups are taken from.
Labels are read once, in the main process, and handed to spawned DataLoader workers as shared memory
(a tensor's storage), so a worker neither copies nor re-reads them.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import torch

from ..errors import ShardError
from ..plan.epoch import EpochPlan, plan_epoch
from ..plan.mixing import Stream, draw_counts, run_plan, run_start, sampled_plan, stream_counts
from ..plan.weighting import class_weights, curriculum_alpha, draw_probabilities
from .config import LoaderConfig
from .panels import PanelFilter
from .streams import MultiReader

__all__ = ["EpochCells", "mix_identity"]


class EpochCells:
    """Which cells each epoch serves, for one ``MultiReader`` and ``LoaderConfig``."""

    def __init__(self, reader: MultiReader, streams: list[Stream], config: LoaderConfig) -> None:
        self.reader, self.config = reader, config
        self.sampled = config.sampled or any(s.kind()[0] != "natural" for s in streams)
        if self.sampled:  # checked now, not in a worker: an impossible mix fails at construction
            stream_counts(reader.stream_sizes(), [s.kind() for s in streams], config.num_samples)
        w = config.weighting
        self.weight_codes = self._codes(w.column) if w is not None else None
        self.group_codes = self._codes(config.group_by) if config.group_by else None

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
        counts = []
        for k, n in enumerate(wanted.tolist()):
            cells = reader.stream_cells(k)
            probs = None
            where = f"stream {reader.names[k]} ({reader.readers[k].root})"
            if cfg.weighting is not None:
                codes, names = self.weight_codes
                codes = codes.numpy()[cells]
                counts_per_class = np.bincount(codes, minlength=len(names))
                per_class = class_weights(cfg.weighting, np.asarray(names, dtype=object), counts_per_class, where)
                alpha = curriculum_alpha(epoch, cfg.weighting.curriculum_epochs)
                probs = draw_probabilities(codes, per_class, alpha)
            rng = np.random.default_rng([cfg.seed, epoch, 2, k])
            counts.append(draw_counts(n, probs, sizes[k], replacement=cfg.replacement, rng=rng, where=where))
        return sampled_plan(reader.shard_cells, np.concatenate(counts), seed=cfg.seed, epoch=epoch)

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
        "weighting": config.weighting.as_dict() if config.weighting else None,
        "panels": panels.spec if panels else None,
    }
    return json.dumps(doc, sort_keys=True)
