"""Running a stage's jobs in this process or in a pool of spawned workers.

Workers are spawned, never forked: HDF5 and TileDB handles must not cross a fork, so each worker opens
its input itself from the picklable task it is given.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor, as_completed
from multiprocessing import get_context
from typing import Any

__all__ = ["run_jobs"]


def run_jobs(
    fn: Callable[[Any], Any], jobs: Sequence[Any], workers: int, on_done: Callable[[int, Any], None], threads: int = 1
) -> None:
    """Run ``fn(job)`` for each job (a picklable dataclass: ``passes.Pass1Job``, ...): in this process
    (on ``threads`` threads), or in a pool of ``workers``
    spawned processes; ``on_done(i, result)`` in order of completion, in the caller's thread."""
    if len(jobs) <= 1 or (workers == 1 and threads == 1):
        for i, job in enumerate(jobs):
            on_done(i, fn(job))
        return
    pool: Executor
    if workers == 1:
        pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="ingest-unit")
    else:
        pool = ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"))
    with pool:
        futures = {pool.submit(fn, job): i for i, job in enumerate(jobs)}
        try:
            for fut in as_completed(futures):
                on_done(futures[fut], fut.result())
        except BaseException:
            for fut in futures:
                fut.cancel()
            raise
