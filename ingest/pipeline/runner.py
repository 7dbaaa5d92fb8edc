"""Running a stage's jobs in this process or in a pool of spawned workers.

Workers are spawned, never forked: HDF5 and TileDB handles must not cross a fork, so each worker opens
its input itself from the picklable task it is given.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from typing import Any

__all__ = ["run_jobs"]


def run_jobs(fn: Callable, jobs: list[tuple], workers: int, on_done: Callable[[int, Any], None]) -> None:
    """Run ``fn(*job)`` for each job, in this process or a spawn pool; ``on_done(i, result)`` in order of completion."""
    if workers == 1 or len(jobs) <= 1:
        for i, job in enumerate(jobs):
            on_done(i, fn(*job))
        return
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
        futures = {pool.submit(fn, *job): i for i, job in enumerate(jobs)}
        try:
            for fut in as_completed(futures):
                on_done(futures[fut], fut.result())
        except BaseException:
            for fut in futures:
                fut.cancel()
            raise
