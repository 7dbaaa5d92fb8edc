"""The plan layer: pure functions of (shard sizes, settings, seed, epoch, world) that say which cells
every (rank, DataLoader worker) serves, in what order, and in which batches.

No file or network I/O and no torch here, so every rank and worker of every epoch is planned, and
property-tested, in one process: the slot plan (``slots``), the epoch's sequence (``epoch``), stream
mixing and weighted draws (``mixing``, ``weighting``), grouped batches (``grouping``), token budgets
(``budget``), exact and elastic resume (``state``, ``elastic``) and one worker's whole plan (``worker``).
"""

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
