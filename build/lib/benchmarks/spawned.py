"""Run a measurement in a fresh ``spawn`` process and collect its result from a queue."""

from __future__ import annotations

import multiprocessing as mp
import queue as queue_module
from collections.abc import Callable

__all__ = ["run_spawned"]


def run_spawned(target: Callable, *args) -> dict:
    """``target(*args, queue)`` in a spawned process; its ``queue.put`` value. A child that dies (an import
    error, a refused option) raises here instead of leaving the caller waiting forever."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=target, args=(*args, queue))
    proc.start()
    while True:
        try:
            out = queue.get(timeout=2)
            break
        except queue_module.Empty:
            if not proc.is_alive():
                name = getattr(target, "__name__", target)
                raise RuntimeError(f"{name}{args[:1]} died (exit code {proc.exitcode})") from None
    proc.join()
    return out
