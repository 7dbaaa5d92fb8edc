"""``CellDataLoader``: torchdata's ``StatefulDataLoader`` with a rank-independent, elastic state.

StatefulDataLoader keeps one dataset state per worker of each rank, and Lightning saves only rank 0's
loader state. This loader's state is instead what every rank shares (``plan.LoaderState``): the epoch,
the number of batches each rank has consumed in it, and the finished *stages* of the epoch. On resume
each worker recomputes its own position from it. With the same world size, batch size and workers the
run continues exactly; with another world size (and the same global batch size) the rest of the epoch
is re-planned over the cells not yet served, so every remaining cell is served exactly once.
"""

from __future__ import annotations

import atexit
import signal
import sys
import warnings
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from torchdata.stateful_dataloader import StatefulDataLoader

from ..errors import ShardError
from ..plan.state import LoaderState, Resume, Stage
from .dataset import ShardedCellDataset
from .startup import check_main_guard, startup_error
from .transport import BufferedBatch, materialize, new_token, release_token

__all__ = ["CellDataLoader", "ResumeInfo"]

# torchdata 0.11 calls a deprecated torch hook on every iterator: noise for our users, nothing to act on
warnings.filterwarnings("ignore", message="'set_vital' is deprecated", category=UserWarning)


@dataclass(frozen=True)
class ResumeInfo:
    """What a restored state resumes: ``batches`` of ``epoch`` already served per rank, and whether the plan
    continues exactly (same world size, workers and batch size) or elastically over the unserved cells."""

    epoch: int
    batches: int
    exact: bool
    world_size: int
    num_workers: int
    batch_size: int
    saved_world_size: int
    saved_num_workers: int
    saved_batch_size: int


class _WorkerInit:
    """DataLoader workers ignore SIGTERM and SIGUSR1: a scheduler signals every process of a job, and a
    worker killed by it would crash the main process before it can checkpoint (the main process stops
    the workers itself; a worker whose parent dies exits on its own)."""

    def __init__(self, user: Callable[[int], None] | None) -> None:
        self.user = user

    def __call__(self, worker_id: int) -> None:
        for sig in (signal.SIGTERM, signal.SIGUSR1):
            signal.signal(sig, signal.SIG_IGN)
        if self.user is not None:
            self.user(worker_id)


#: loaders with worker processes, stopped at interpreter exit (see ``_stop_workers_at_exit``)
_WITH_WORKERS: weakref.WeakSet[CellDataLoader] = weakref.WeakSet()


def _stop_workers_at_exit() -> None:
    """Stop every live loader's workers before ``multiprocessing`` joins its children at exit.

    A script that ends with a persistent loader still referenced (a module-level ``loader``) leaves
    its workers waiting for work; ``multiprocessing``'s own exit hook then terminates daemonic children
    with SIGTERM, which workers ignore (see ``_WorkerInit``), and joins them: forever. Registered after
    that hook (this module imports torch, which imports ``multiprocessing``), this one runs before it.
    """
    for loader in list(_WITH_WORKERS):
        loader.shutdown_workers()


atexit.register(_stop_workers_at_exit)


class CellDataLoader(StatefulDataLoader):
    """Batches of a ``ShardedCellDataset``; workers start with ``spawn`` (TileDB, zarr and fsspec threads
    are not fork-safe). ``len(loader)`` is the batches per rank of the current epoch; ``sized=False``
    makes ``len()`` raise ``TypeError`` instead, so that a trainer that reads the length once (Lightning)
    ends each epoch on the data: a token budget's batch count changes from epoch to epoch, and an
    elastic resume re-plans the rest of an epoch."""

    def __init__(
        self,
        dataset: ShardedCellDataset,
        num_workers: int = 0,
        persistent_workers: bool = False,
        multiprocessing_context: str = "spawn",
        worker_init_fn: Callable[[int], None] | None = None,
        sized: bool = True,
        **kwargs: Any,
    ) -> None:
        if multiprocessing_context not in ("spawn", "forkserver"):
            raise ShardError(f"multiprocessing_context={multiprocessing_context!r}: use spawn or forkserver")
        super().__init__(
            dataset,
            batch_size=None,
            num_workers=num_workers,
            persistent_workers=persistent_workers and num_workers > 0,
            multiprocessing_context=multiprocessing_context if num_workers else None,
            worker_init_fn=_WorkerInit(worker_init_fn) if num_workers else worker_init_fn,
            **kwargs,
        )
        self.sized = sized
        self._token = new_token()
        if num_workers:
            _WITH_WORKERS.add(self)
            # slots per worker: what the DataLoader keeps in flight (prefetch_factor, default 2) plus the
            # batch the consumer holds and two spare; beyond that a worker sends ordinary batches
            dataset.use_transport(self._token, (self.prefetch_factor or 2) + 3)
        self.resumed: ResumeInfo | None = None  # set by load_state_dict
        self._consumed = 0
        self._stages: tuple[Stage, ...] = ()
        self._epoch_seen: int | None = None
        self._pending: Resume | None = None

    def __iter__(self) -> Iterator[dict[str, Any]]:
        ds: ShardedCellDataset = self.dataset
        epoch = ds.epoch
        if self._pending is not None and self._pending.epoch == epoch:
            self._consumed, self._stages = self._pending.batches, self._pending.stages
            ds.resume_from(self._pending)
        else:
            self._consumed, self._stages = 0, ()
        self._pending = None
        self._epoch_seen = epoch
        starting = bool(self.num_workers) and (self._iterator is None or not self.persistent_workers)
        if starting:  # workers start now
            check_main_guard(self.num_workers, self.multiprocessing_context.get_start_method(), sys._getframe(1))
        try:
            batches = None
            while True:
                try:
                    batches = super().__iter__() if batches is None else batches
                    batch = next(batches)
                except StopIteration:
                    return
                except RuntimeError as exc:  # torch's liveness check: a worker exited before its first batch
                    if starting and "exited unexpectedly" in str(exc):
                        raise startup_error(self.num_workers, exc) from exc
                    raise
                starting = False
                self._consumed += 1
                yield materialize(batch) if isinstance(batch, BufferedBatch) else batch
        finally:
            if not self.persistent_workers:  # the workers, and their slots, end with the iteration
                release_token(self._token)

    def batches_per_rank(self, epoch: int | None = None) -> int:
        """The batches each rank gets from this loader in a whole ``epoch`` (default: the current one)."""
        ds: ShardedCellDataset = self.dataset
        return ds.batches_per_rank(self.num_workers, epoch)

    def __len__(self) -> int:
        """Batches per rank in the whole current epoch (``batches_per_rank``)."""
        if not self.sized:
            raise TypeError("this CellDataLoader is unsized (sized=False); loader.batches_per_rank() counts")
        return self.batches_per_rank()

    def shutdown_workers(self) -> None:
        """Stop this loader's worker processes now (persistent ones too); the next iteration starts new
        ones. A worker that does not stop within seconds is killed."""
        it, self._iterator = self._iterator, None
        release_token(self._token)
        if it is None:
            return
        stop = getattr(it, "_shutdown_workers", None)
        if stop is not None:
            stop()
        for worker in getattr(it, "_workers", []):
            if worker.is_alive():
                worker.kill()
                worker.join(timeout=5)

    def loader_state(self) -> LoaderState:
        """The rank-independent position: the epoch and the batches this rank consumed in its stage."""
        ds: ShardedCellDataset = self.dataset
        identity = ds.identity(ds.topology().world_size, self.num_workers)
        if self._pending is not None:  # restored, not yet iterated: saved again as it was loaded
            return identity.with_position(self._pending.epoch, self._pending.batches, self._pending.stages)
        consumed = self._consumed if self._epoch_seen == ds.epoch else 0
        return identity.with_position(ds.epoch, consumed, self._stages)

    def state_dict(self) -> dict[str, Any]:
        return self.loader_state().to_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        ds: ShardedCellDataset = self.dataset
        if self._iterator is not None and self.persistent_workers:
            raise ShardError("load the loader state before the first iteration (persistent workers already run)")
        saved = LoaderState.from_dict(state)
        world = ds.topology().world_size
        same = ds.check_state(saved, world, self.num_workers)
        stages, total = saved.stages, saved.batches
        self.resumed = ResumeInfo(
            saved.epoch,
            total,
            same,
            world,
            self.num_workers,
            ds.config.batch_size,
            saved.world_size,
            saved.num_workers,
            saved.batch_size,
        )
        if not same:  # elastic: what the old world served becomes a finished stage
            stages += (Stage(saved.world_size, saved.num_workers, saved.batch_size, saved.remainder, total),)
            total = 0
        ds.set_epoch(saved.epoch)
        self._pending = Resume(saved.epoch, total, stages, per_rank=True)
