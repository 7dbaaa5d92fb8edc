"""Reading windows ahead of the collator, in a background thread of the loader's process.

Decoding (zstd, crc32c) and gathering release the GIL, so on a machine with a spare core a window can
be read while the previous one is collated. Windows are read strictly in order and only by that one
thread, so the readers' per-shard state (chunk caches, the repeat cache) is touched by one thread at a
time and the batches are exactly those of a read in the consumer's thread. An error raised while
reading ahead surfaces, unchanged, when the consumer asks for that window; nothing waits forever: the
thread is a daemon and is cancelled when the iteration stops.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Generic, TypeVar

__all__ = ["ReadAhead"]

T = TypeVar("T")


class ReadAhead(Generic[T]):
    """``get(k)`` for ``k = first, first + 1, ...`` (in order) of ``read(k)``, ``k < stop``, with up to
    ``depth`` windows read ahead; ``depth == 0`` reads in the caller's thread."""

    def __init__(self, read: Callable[[int], T], first: int, stop: int, depth: int) -> None:
        self.read, self.stop, self.depth = read, stop, depth
        self.next = first  # the next window to submit
        self.pending: dict[int, Future[T]] = {}
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="cellshard-read") if depth > 0 else None
        self._fill(first)

    def _fill(self, k: int) -> None:
        if self.pool is None:
            return
        self.next = max(self.next, k)
        while self.next < self.stop and self.next < k + 1 + self.depth:
            self.pending[self.next] = self.pool.submit(self.read, self.next)
            self.next += 1

    def get(self, k: int) -> T:
        if self.pool is None:
            return self.read(k)
        future = self.pending.pop(k, None)
        if future is None:  # not in order (never, in the loader): read it here, after what is pending
            for f in self.pending.values():
                f.result()
            self.pending.clear()
            self.next = k + 1
            value = self.read(k)
            self._fill(k + 1)
            return value
        self._fill(k)
        return future.result()

    def close(self) -> None:
        if self.pool is not None:
            for f in self.pending.values():
                f.cancel()
            self.pending.clear()
            self.pool.shutdown(wait=False, cancel_futures=True)
            self.pool = None

    def __enter__(self) -> ReadAhead[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
