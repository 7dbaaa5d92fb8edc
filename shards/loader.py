"""``CellDataLoader``: torchdata's ``StatefulDataLoader`` with a rank-independent, elastic state.

StatefulDataLoader keeps one dataset state per worker of each rank, and Lightning saves only rank 0's
loader state. This loader's state is instead what every rank shares: the epoch, the number of batches
each rank has consumed in it, and the finished *stages* of the epoch. On resume each worker recomputes
its own position from it. With the same world size, batch size and workers the run continues exactly;
with another world size (and the same global batch size) the rest of the epoch is re-planned over the
cells not yet served, so every remaining cell is served exactly once.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import Any

from torchdata.stateful_dataloader import StatefulDataLoader

from .dataset import ShardedCellDataset
from .errors import ShardError

__all__ = ["CellDataLoader"]

# torchdata 0.11 calls a deprecated torch hook on every iterator: noise for our users, nothing to act on
warnings.filterwarnings("ignore", message="'set_vital' is deprecated", category=UserWarning)


class CellDataLoader(StatefulDataLoader):
    """Batches of a ``ShardedCellDataset``; workers start with ``spawn`` (TileDB, zarr and fsspec threads
    are not fork-safe)."""

    def __init__(self, dataset: ShardedCellDataset, num_workers: int = 0, persistent_workers: bool = False,
                 multiprocessing_context: str = "spawn", **kwargs: Any) -> None:  # fmt: skip
        if multiprocessing_context not in ("spawn", "forkserver"):
            raise ShardError(f"multiprocessing_context={multiprocessing_context!r}: use spawn or forkserver")
        super().__init__(
            dataset,
            batch_size=None,
            num_workers=num_workers,
            persistent_workers=persistent_workers and num_workers > 0,
            multiprocessing_context=multiprocessing_context if num_workers else None,
            **kwargs,
        )
        self._consumed = 0
        self._stages: list[dict[str, Any]] = []
        self._epoch_seen: int | None = None
        self._pending: dict[str, Any] | None = None

    def __iter__(self) -> Iterator[dict[str, Any]]:
        ds: ShardedCellDataset = self.dataset
        epoch = ds.epoch
        if self._pending is not None and self._pending["epoch"] == epoch:
            self._consumed, self._stages = self._pending["total"], self._pending["stages"]
            ds._resume = dict(self._pending)
        else:
            self._consumed, self._stages = 0, []
        self._pending = None
        self._epoch_seen = epoch
        for batch in super().__iter__():
            self._consumed += 1
            yield batch

    def state_dict(self) -> dict[str, Any]:
        ds: ShardedCellDataset = self.dataset
        topo = ds.topology()
        identity = {**ds._identity(topo), "num_workers": self.num_workers}
        if self._pending is not None:
            return {**identity, **{k: self._pending[k] for k in ("epoch", "stages")}, "batches": self._pending["total"]}
        return {**identity, "epoch": ds.epoch, "batches": self._consumed if self._epoch_seen == ds.epoch else 0,
                "stages": list(self._stages)}  # fmt: skip

    def load_state_dict(self, state: dict[str, Any]) -> None:
        ds: ShardedCellDataset = self.dataset
        if self._iterator is not None and self.persistent_workers:
            raise ShardError("load the loader state before the first iteration (persistent workers already run)")
        world = ds.topology().world_size
        same = ds.check_state(state, world, self.num_workers)
        stages = list(state.get("stages", []))
        total = int(state["batches"])
        if not same:  # elastic: what the old world served becomes a finished stage
            stages.append({k: state[k] for k in ("world_size", "num_workers", "batch_size")}
                          | {"policy": state["remainder"], "batches": total})  # fmt: skip
            total = 0
        ds.set_epoch(int(state["epoch"]))
        self._pending = {"epoch": int(state["epoch"]), "total": total, "stages": stages}
