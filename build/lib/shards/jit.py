"""``kernel``: numba's ``njit`` with an on-disk cache that is safe when many processes compile at once.

Every compiled kernel of cellshard (ingest's tokenizer and medians, the loader's collate, gather and
tar parser, the token-budget planner) goes through here. numba's own ``cache=True`` is not safe for
processes that compile the same function cold and at the same time, which is what a fresh install
does when torchrun starts eight ranks with four loader workers each, or an ingest starts its workers:
each process reads the cache index, picks the first free data-file number for its signature and
writes index and data separately, so two processes compiling two signatures (int32 and int64
indices, say) can both take ``.1.nbc``. The index then names one signature's machine code for the
other, and a later process runs code compiled for other array types on its arrays: out-of-bounds
writes, heap corruption, or silently wrong numbers (numba issues #4807 and #10128; reproduced here
with six processes and six dtypes: 5 of 60 cold starts left a mismatched cache).

The cache used here holds an exclusive ``flock`` on a lock file beside the function's index while it
loads or saves an entry, so an index and its data files always change together. Where no cache
location is writable (a read-only install and no ``NUMBA_CACHE_DIR``) kernels compile in each process
instead of failing at import.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from typing import Any

import numba
from numba.core.caching import FunctionCache

try:  # POSIX; elsewhere the cache is numba's own, unlocked
    import fcntl
except ImportError:  # pragma: no cover - not on Linux or macOS
    fcntl = None  # type: ignore[assignment]

__all__ = ["LockedFunctionCache", "kernel"]


class LockedFunctionCache(FunctionCache):
    """numba's function cache, each load and save done under an exclusive lock per function."""

    @property
    def lock_path(self) -> str:
        return os.path.join(self._cache_path, f"{self._impl.filename_base}.lock")

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        if fcntl is None:
            yield
            return
        try:
            self._impl.locator.ensure_cache_path()
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError:  # the cache directory went away or is not writable: numba copes without it
            yield
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    def load_overload(self, sig: Any, target_context: Any) -> Any:
        with self._locked():
            return super().load_overload(sig, target_context)

    def save_overload(self, sig: Any, data: Any) -> None:
        with self._locked():
            super().save_overload(sig, data)


def kernel(fn: Callable | None = None, /, **options: Any) -> Any:
    """``numba.njit(**options)`` with the locked on-disk cache (``cache`` is not an option here: every
    kernel is cached). Used bare (``@kernel``) or with options (``@kernel(nogil=True)``)."""
    if "cache" in options:
        raise TypeError("kernel() always caches; drop cache=")

    def wrap(func: Callable) -> Any:
        dispatcher = numba.njit(**options)(func)
        try:
            dispatcher._cache = LockedFunctionCache(func)  # what Dispatcher.enable_caching() sets
        except RuntimeError:  # "no locator available": no writable cache location for this file
            pass
        return dispatcher

    return wrap(fn) if fn is not None else wrap
