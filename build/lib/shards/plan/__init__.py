"""The plan layer: pure functions of (shard sizes, settings, seed, epoch, world) that say which cells
every (rank, DataLoader worker) serves, in what order, and in which batches.

No file or network I/O and no torch here, so every rank and worker of every epoch is planned, and
property-tested, in one process: the slot plan (``slots``), the epoch's sequence (``epoch``), stream
mixing and weighted draws (``mixing``, ``weighting``), grouped batches (``grouping``), token budgets
(``budget``), exact and elastic resume (``state``, ``elastic``) and one worker's whole plan (``worker``).

Every name loads on first use (``shards.lazy``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazy import lazy_namespace

if TYPE_CHECKING:
    from .budget import budget_batches, budget_plan
    from .elastic import remaining_sequence, start_position, worker_batches
    from .epoch import EpochPlan, plan_epoch
    from .grouping import GroupedBatches, equalize, group_batches, slot_groups
    from .mixing import STREAM_KINDS, Stream, apportion, draw_counts, sampled_plan, stream_counts
    from .sampler import DistributedShardSampler
    from .slots import REMAINDER_POLICIES, SlotPlan, check_world, plan_slots, stream_positions
    from .state import STATE_VERSION, LoaderState, Resume, Stage
    from .topology import Topology, rank_from_env
    from .weighting import SCHEMES, Weighting, class_weights, curriculum_alpha, draw_probabilities
    from .worker import SlotOptions, WorkerPlan, plan_worker

#: each public name and the module that defines it
_EXPORTS = {
    "REMAINDER_POLICIES": ".slots",
    "SCHEMES": ".weighting",
    "STATE_VERSION": ".state",
    "STREAM_KINDS": ".mixing",
    "DistributedShardSampler": ".sampler",
    "EpochPlan": ".epoch",
    "GroupedBatches": ".grouping",
    "LoaderState": ".state",
    "Resume": ".state",
    "SlotOptions": ".worker",
    "SlotPlan": ".slots",
    "Stage": ".state",
    "Stream": ".mixing",
    "Topology": ".topology",
    "Weighting": ".weighting",
    "WorkerPlan": ".worker",
    "apportion": ".mixing",
    "budget_batches": ".budget",
    "budget_plan": ".budget",
    "check_world": ".slots",
    "class_weights": ".weighting",
    "curriculum_alpha": ".weighting",
    "draw_counts": ".mixing",
    "draw_probabilities": ".weighting",
    "equalize": ".grouping",
    "group_batches": ".grouping",
    "plan_epoch": ".epoch",
    "plan_slots": ".slots",
    "plan_worker": ".worker",
    "rank_from_env": ".topology",
    "remaining_sequence": ".elastic",
    "sampled_plan": ".mixing",
    "slot_groups": ".grouping",
    "start_position": ".elastic",
    "stream_counts": ".mixing",
    "stream_positions": ".slots",
    "worker_batches": ".elastic",
}

__all__ = [
    "REMAINDER_POLICIES",
    "SCHEMES",
    "STATE_VERSION",
    "STREAM_KINDS",
    "DistributedShardSampler",
    "EpochPlan",
    "GroupedBatches",
    "LoaderState",
    "Resume",
    "SlotOptions",
    "SlotPlan",
    "Stage",
    "Stream",
    "Topology",
    "Weighting",
    "WorkerPlan",
    "apportion",
    "budget_batches",
    "budget_plan",
    "check_world",
    "class_weights",
    "curriculum_alpha",
    "draw_counts",
    "draw_probabilities",
    "equalize",
    "group_batches",
    "plan_epoch",
    "plan_slots",
    "plan_worker",
    "rank_from_env",
    "remaining_sequence",
    "sampled_plan",
    "slot_groups",
    "start_position",
    "stream_counts",
    "stream_positions",
    "worker_batches",
]

__getattr__, __dir__ = lazy_namespace(__name__, _EXPORTS)
