"""``plain``: every shard of the set(s) once per epoch, in the epoch's shard order (the default)."""

from __future__ import annotations

from ...plan.epoch import EpochPlan, plan_epoch
from ..config import LoaderConfig
from ..streams import MultiReader
from .base import ModeBase

__all__ = ["Plain"]


class Plain(ModeBase):
    """Each cell once: the shard order is drawn from (seed, epoch), the cells within a worker's span are
    shuffled by the windows."""

    name = "plain"

    def __init__(self, reader: MultiReader, config: LoaderConfig) -> None:
        super().__init__(config)
        self.reader = reader

    def plan_epoch(self, epoch: int) -> EpochPlan:
        plan, _ = plan_epoch(
            self.reader.shard_cells, world_size=1, num_workers=0, batch_size=1, seed=self.config.seed, epoch=epoch
        )
        return plan
