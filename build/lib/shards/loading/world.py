"""This process's place in the job, detected in one place: the rank (``torch.distributed``, else the
launcher's environment) and the DataLoader worker."""

from __future__ import annotations

from ..plan.topology import rank_from_env

__all__ = ["detect_rank", "worker_info"]


def detect_rank(env: dict[str, str] | None = None) -> tuple[int, int]:
    """(rank, world size): an initialised process group's, else the environment's (``rank_from_env``)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return rank_from_env(env)


def worker_info() -> tuple[int, int]:
    """(worker id, number of workers) of the current DataLoader worker; (0, 0) in the main process."""
    from torch.utils.data import get_worker_info

    info = get_worker_info()
    return (0, 0) if info is None else (info.id, info.num_workers)
