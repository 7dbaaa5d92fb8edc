"""Where each worker stands, and what is left of an epoch after earlier *stages* (parts of the epoch run
with another world size): the arithmetic of exact and elastic resume."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .slots import plan_slots, stream_positions
from .state import Resume, Stage

__all__ = ["remaining_sequence", "start_position", "worker_batches"]


def worker_batches(total: int, num_workers: int) -> list[int]:
    """Batches each worker had yielded when a rank had consumed ``total`` (DataLoader round-robin)."""
    k = max(num_workers, 1)
    return [(total - w + k - 1) // k for w in range(k)]


def remaining_sequence(
    n: int,
    stages: Sequence[Stage],
    *,
    seed: int,
    epoch: int,
    lanes: int,
    lane_cells: int,
    tokens: np.ndarray | None = None,
) -> np.ndarray:
    """Epoch-sequence positions not yet served after the given (finished) stages, in sequence order.

    A ``Stage`` is a part of the epoch run with one world, each rank having consumed ``batches``
    batches. The positions a later stage serves come from this array, so a job resumed on another
    world size serves every remaining cell exactly once.
    """
    seq = np.arange(n, dtype=np.int64)
    for i, st in enumerate(stages):
        slots = plan_slots(
            len(seq),
            world_size=st.world_size,
            num_workers=st.num_workers,
            batch_size=st.batch_size,
            seed=seed,
            epoch=epoch,
            policy=st.policy,
            lanes=lanes,
            lane_cells=lane_cells,
            stage=i,
            tokens=None if tokens is None else tokens[seq],
        )
        per_worker = worker_batches(st.batches, st.num_workers)
        used = []
        for slot in slots:
            count = per_worker[slot.slot % len(per_worker)] * slot.batch_size
            pos = slot.to_sequence(stream_positions(slot, count))
            used.append(pos[pos < len(seq)])  # pad repeats consumed nothing new
        served = np.zeros(len(seq), dtype=bool)
        if used:
            served[np.concatenate(used)] = True
        seq = seq[~served]
    return seq


def start_position(
    resume: Resume | None, epoch: int, worker: int, num_workers: int
) -> tuple[tuple[Stage, ...], int, int]:
    """``(finished stages, slot role, batches that role has served)`` for a worker starting ``epoch``.

    A rank-independent resume (``per_rank``) names the batches the rank consumed: the DataLoader asks
    worker 0 first, so worker ``w`` plays the role that serves global batch ``total + w`` of the
    uninterrupted round-robin order. A per-worker resume is that worker's own count.
    """
    if resume is None or resume.epoch != epoch:
        return (), worker, 0
    if not resume.per_rank:
        return resume.stages, worker, resume.batches
    k = max(num_workers, 1)
    role = (worker + resume.batches) % k
    return resume.stages, role, worker_batches(resume.batches, k)[role]
