"""Who am I in the job: a small frozen value (rank, world size, worker, number of workers), and the rank
as the launcher's environment states it.

The loader (``shards.loading.world``) asks an initialised ``torch.distributed`` process group first, then
this environment (``RANK`` and ``WORLD_SIZE`` from torchrun, ``SLURM_PROCID``/``SLURM_NTASKS``), or takes
an injected topology. A partial environment (``LOCAL_RANK`` without ``RANK``, say) is an error: reading
the local rank as the global rank makes two nodes read the same data. With no sign of a distributed job
at all, the process is the whole job (world size 1).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from ..errors import ShardError

__all__ = ["Topology", "rank_from_env"]

_ENV_KEYS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "SLURM_PROCID", "SLURM_NTASKS")


@dataclass(frozen=True)
class Topology:
    rank: int
    world_size: int
    worker: int = 0
    num_workers: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.rank < self.world_size:
            raise ShardError(f"rank {self.rank} is outside world size {self.world_size}")
        if self.num_workers < 0 or not 0 <= self.worker < max(self.num_workers, 1):
            raise ShardError(f"worker {self.worker} is outside {self.num_workers} DataLoader workers")

    @property
    def slot(self) -> int:
        return self.rank * max(self.num_workers, 1) + self.worker


def rank_from_env(env: dict[str, str] | None = None) -> tuple[int, int]:
    """(rank, world size) as the launcher's environment states it; raises when the signs contradict or
    are incomplete."""
    env = dict(os.environ if env is None else env)
    if "RANK" in env or "WORLD_SIZE" in env:
        if "RANK" not in env or "WORLD_SIZE" not in env:
            raise ShardError("RANK and WORLD_SIZE must both be set (launch with torchrun), or pass the topology")
        return int(env["RANK"]), int(env["WORLD_SIZE"])
    if "SLURM_PROCID" in env and "SLURM_NTASKS" in env:
        return int(env["SLURM_PROCID"]), int(env["SLURM_NTASKS"])
    partial = [k for k in _ENV_KEYS if k in env]
    if partial:
        raise ShardError(
            f"cannot tell this process's global rank: {partial} set without RANK/WORLD_SIZE; "
            "launch with torchrun or pass rank and world_size explicitly"
        )
    return 0, 1
