"""``ShardedCellDataset``: an ``IterableDataset`` of ready batches, resumable exactly.

Each (rank, DataLoader worker) serves its slot of the epoch plan (``sampler.plan_epoch``): window by
window, reading each lane's run of cells with one vectorized read, shuffling the window, cutting
batches and collating them (truncate, specials, pad, mask). Batches are whole: use the DataLoader with
``batch_size=None``.

The epoch lives in a shared-memory tensor, so ``set_epoch`` in the main process reaches persistent
workers too. ``state_dict`` is this worker's ``{epoch, batches, stages}`` plus what makes it valid
(shard set, seed, batch size, world size, workers): what torchdata's StatefulDataLoader stores per
worker. ``CellDataLoader`` keeps one rank-independent state instead (epoch + batches consumed) and
supports elastic resumes. Optional: balancing by tokens, batching by a token budget (the epoch's batch
plan is computed up front), scGPT value bins, remote shard sets, skipping corrupt runs.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import IterableDataset

from .collate import Collator
from .errors import ShardError
from .readers import ShardSetReader
from .sampler import (
    REMAINDER_POLICIES,
    SlotPlan,
    budget_plan,
    plan_epoch,
    plan_slots,
    remaining_sequence,
    worker_batches,
)
from .topology import Topology, detect_rank, worker_info

__all__ = ["STATE_VERSION", "ShardedCellDataset", "check_options"]

log = logging.getLogger(__name__)

STATE_VERSION = 1


def check_options(*, batch_size: int, context_length: int, remainder: str, on_error: str,
                  token_budget: int | None, prefix: str = "") -> None:  # fmt: skip
    """The loader's scalar options, each error naming its option (``prefix`` + name): the dataset checks
    them, and a training config calls this when it is read, before a run writes anything."""
    if batch_size < 1:
        raise ShardError(f"{prefix}batch_size={batch_size}: must be at least 1")
    if context_length < 3:
        raise ShardError(f"{prefix}context_length={context_length}: must be at least 3 (<cls>, a gene, <eos>)")
    if remainder not in REMAINDER_POLICIES:
        raise ShardError(f"{prefix}remainder={remainder!r}: choose one of {list(REMAINDER_POLICIES)}")
    if on_error not in ("raise", "skip"):
        raise ShardError(f"{prefix}on_error={on_error!r}: choose raise (refuse a corrupt shard) or skip")
    if token_budget is not None and token_budget < context_length:
        raise ShardError(f"{prefix}token_budget={token_budget}: must be at least context_length={context_length}")


class ShardedCellDataset(IterableDataset):
    def __init__(
        self,
        path: str | Path,
        *,
        batch_size: int,
        context_length: int = 2048,
        split: str = "train",
        seed: int = 0,
        remainder: str = "drop",
        lanes: int = 4,
        lane_cells: int = 256,
        rank: int | None = None,
        world_size: int | None = None,
        return_cell_ids: bool = False,
        cache_dir: str | Path | None = None,
        cache_bytes: int | None = None,
        storage_options: dict | None = None,
        on_error: str = "raise",
        value_bins: int = 0,
        balance_tokens: bool = False,
        balance_chunk: int = 64,
        token_budget: int | None = None,
    ) -> None:
        check_options(batch_size=batch_size, context_length=context_length, remainder=remainder,
                      on_error=on_error, token_budget=token_budget)  # fmt: skip
        if (rank is None) != (world_size is None):
            raise ShardError("pass both rank and world_size, or neither (then they are detected)")
        self.path = str(path)
        self.reader = ShardSetReader(path, split, cache_dir=cache_dir, cache_bytes=cache_bytes,
                                     storage_options=storage_options)  # fmt: skip
        try:
            self.collator = Collator(self.reader.vocab(), context_length, seed, value_bins=value_bins)
        except ValueError as exc:
            raise ShardError(str(exc)) from None
        self.batch_size, self.seed, self.remainder, self.split = batch_size, seed, remainder, split
        self.lanes, self.lane_cells = lanes, lane_cells
        self.return_cell_ids = return_cell_ids
        self.on_error = on_error
        self.balance_tokens, self.balance_chunk = balance_tokens, balance_chunk
        self.token_budget = token_budget
        self.context_length = context_length
        self.skipped_cells = 0  # cells of shards that failed their integrity check, with on_error="skip"
        self.skipped_shards: dict[str, str] = {}  # shard path -> why, in this process (with on_error="skip")
        self._rank = (rank, world_size) if rank is not None else None
        self._epoch = torch.zeros(1, dtype=torch.int64).share_memory_()
        self._batches = 0  # yielded in the current stage of the epoch by this process (worker)
        self._stages: list[dict[str, Any]] = []  # finished stages of the current epoch (elastic resume)
        self._resume: dict[str, Any] | None = None

    # -- epoch and topology --------------------------------------------------------------------------
    def set_epoch(self, epoch: int) -> None:
        self._epoch.fill_(int(epoch))

    @property
    def epoch(self) -> int:
        return int(self._epoch.item())

    def topology(self) -> Topology:
        rank, world = self._rank if self._rank is not None else detect_rank()
        worker, workers = worker_info()
        return Topology(rank, world, worker, workers)

    # -- state ---------------------------------------------------------------------------------------
    def _identity(self, topo: Topology) -> dict[str, Any]:
        return {"version": STATE_VERSION, "build_id": self.reader.manifest["build_id"], "split": self.split,
                "seed": self.seed, "batch_size": self.batch_size, "remainder": self.remainder,
                "balance_tokens": self.balance_tokens, "token_budget": self.token_budget,
                "world_size": topo.world_size, "num_workers": topo.num_workers}  # fmt: skip

    def state_dict(self) -> dict[str, Any]:
        """This process's (worker's) position, as torchdata's StatefulDataLoader stores per worker."""
        return {**self._identity(self.topology()), "epoch": self.epoch, "batches": self._batches,
                "stages": self._stages}  # fmt: skip

    def load_state_dict(self, state: dict[str, Any]) -> None:
        mine = self._identity(self.topology())
        if state.get("version") != STATE_VERSION:
            raise ShardError(f"loader state version {state.get('version')} is not {STATE_VERSION}; cannot resume")
        for key in (
            "build_id",
            "split",
            "seed",
            "batch_size",
            "remainder",
            "balance_tokens",
            "world_size",
            "num_workers",
        ):
            if state.get(key) != mine[key]:
                what = "shard set" if key == "build_id" else key
                raise ShardError(
                    f"cannot resume: the saved loader state has {what}={state.get(key)!r}, this run has "
                    f"{mine[key]!r}; resume with the same data settings"
                )
        self.set_epoch(int(state["epoch"]))
        self._resume = {"epoch": int(state["epoch"]), "start": int(state["batches"]), "stages": state.get("stages", [])}

    def check_state(self, state: dict[str, Any], world_size: int, num_workers: int) -> bool:
        """Validate a rank-independent loader state; True when it continues the same stage (same world)."""
        mine = {**self._identity(Topology(0, world_size)), "num_workers": num_workers}
        if state.get("version") != STATE_VERSION:
            raise ShardError(f"loader state version {state.get('version')} is not {STATE_VERSION}; cannot resume")
        for key in ("build_id", "split", "seed", "remainder", "balance_tokens", "token_budget"):
            if state.get(key) != mine[key]:
                what = "shard set" if key == "build_id" else key
                raise ShardError(f"cannot resume: the saved loader state has {what}={state.get(key)!r}, "
                                 f"this run has {mine[key]!r}; resume with the same data settings")  # fmt: skip
        same = all(state[k] == mine[k] for k in ("world_size", "num_workers", "batch_size"))
        if not same and self.token_budget is not None:
            raise ShardError("cannot resume a token-budget run on another world size, batch size or workers")
        if not same and state["world_size"] * state["batch_size"] != world_size * self.batch_size:
            raise ShardError(
                f"cannot resume on {world_size} ranks x batch_size {self.batch_size}: the saved run had "
                f"{state['world_size']} x {state['batch_size']}; keep the global batch size equal "
                f"(set --data.batch_size={state['world_size'] * state['batch_size'] // world_size})"
            )
        return same

    # -- iteration -----------------------------------------------------------------------------------
    def _window(self, plan, seq: np.ndarray, slot: SlotPlan, k: int):
        """Read window ``k`` run by run: (genes, offsets, cell ids, is_pad) in read order, and the rows in
        served (shuffled) order."""
        order = slot.window_positions(k)  # shuffled span-relative positions
        lo_hi = slot._window_ranges(k)
        pieces, ids, pads, pos_index = [], [], [], []
        for lo, hi in lo_hi:
            at = slot.to_sequence(np.arange(lo, hi))  # index into the stage's sequence; beyond it: pad repeats
            pad = at >= len(seq)
            shard, cell, _ = plan.locate(seq[np.where(pad, at - len(seq), at) % len(seq)])
            cuts = np.flatnonzero((np.diff(shard) != 0) | (np.diff(cell) != 1)) + 1
            for a, b in zip(np.r_[0, cuts], np.r_[cuts, len(at)], strict=True):
                genes, offsets, cell_ids, bad = self._read_run(int(shard[a]), int(cell[a]), int(cell[b - 1]) + 1)
                pieces.append((genes, offsets))
                ids.append(cell_ids)
                pads.append(pad[a:b] | bad)
            pos_index.append(np.arange(lo, hi))
        lengths = np.concatenate([np.diff(o) for _, o in pieces])
        genes = np.concatenate([g for g, _ in pieces], axis=1)  # rows: gene tokens, counts
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        ids_all, pads_all = np.concatenate(ids), np.concatenate(pads)
        span_pos = np.concatenate(pos_index)  # ascending: lanes are read in order
        rows = np.searchsorted(span_pos, order)  # served order -> row of the window's read
        return genes, offsets, ids_all, pads_all, rows

    def _read_run(self, shard: int, start: int, stop: int):
        """One run of cells. A shard that fails a check raises (``on_error="raise"``), or with
        ``on_error="skip"`` is skipped from then on in this process: its runs become empty cells of zero
        loss weight (so every rank still yields the same number of batches), with one warning per
        shard and the ``skipped_cells`` / ``skipped_shards`` counters."""
        path = self.reader.shards[shard]["path"]
        if path not in self.skipped_shards:
            try:
                genes, counts, offsets, ids = self.reader.read(shard, start, stop)
                return np.stack([genes, counts]), offsets, ids, np.zeros(stop - start, dtype=bool)
            except ShardError as exc:
                if self.on_error == "raise":
                    raise
                self.skipped_shards[path] = str(exc)
                log.warning("skipping shard %s for the rest of this run (%s); on_error='skip' serves its cells "
                            "as zero-weight placeholders", path, exc)  # fmt: skip
        self.skipped_cells += stop - start
        ids = np.array([f"skipped:{path}:{i}" for i in range(start, stop)], dtype=object)
        empty = np.zeros((2, 0), np.int32)
        return empty, np.zeros(stop - start + 1, np.int64), ids, np.ones(stop - start, dtype=bool)

    def _start(self, topo: Topology, epoch: int) -> tuple[list[dict], int, int]:
        """(finished stages, slot role, batches already served by that role) for this iteration."""
        resume, self._resume = self._resume, None
        k = max(topo.num_workers, 1)
        if resume is None or resume["epoch"] != epoch:
            return [], topo.worker, 0
        if "total" not in resume:  # a per-worker state restored by StatefulDataLoader itself
            return resume["stages"], topo.worker, resume["start"]
        # a rank-independent state: the DataLoader asks worker 0 first, so worker w plays the role that
        # serves global batch total + w of the uninterrupted round-robin order
        role = (topo.worker + resume["total"]) % k
        return resume["stages"], role, worker_batches(resume["total"], k)[role]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        topo = self.topology()
        epoch = self.epoch
        stages, role, start = self._start(topo, epoch)
        plan, _ = plan_epoch(self.reader.shard_cells, world_size=1, num_workers=0, batch_size=1, seed=self.seed,
                             epoch=epoch)  # fmt: skip
        tokens = None
        if self.balance_tokens or self.token_budget:  # per-cell token counts in this epoch's sequence order
            tokens = np.concatenate([self.reader.cell_tokens(int(i)) for i in plan.shard_order]).astype(np.int64)
        seq = np.arange(plan.n_cells)
        if stages:  # an elastic resume: only what the earlier stages did not serve
            seq = remaining_sequence(plan.n_cells, stages, seed=self.seed, epoch=epoch, lanes=self.lanes,
                                     lane_cells=self.lane_cells, tokens=tokens)  # fmt: skip
        slots = plan_slots(len(seq), world_size=topo.world_size, num_workers=topo.num_workers,
                           batch_size=self.batch_size, seed=self.seed, epoch=epoch, policy=self.remainder,
                           lanes=self.lanes, lane_cells=self.lane_cells, stage=len(stages),
                           tokens=tokens[seq] if self.balance_tokens else None,
                           chunk_cells=self.balance_chunk)  # fmt: skip
        index = topo.rank * max(topo.num_workers, 1) + role
        slot = slots[index]
        if self.token_budget:  # the whole epoch's batch plan, so every rank agrees on the count
            n = len(seq)

            def costs(at: np.ndarray) -> np.ndarray:
                cells = tokens[seq[np.where(at >= n, at - n, at) % n]]
                return np.minimum(cells, self.context_length - 2) + 2

            ends = budget_plan(slots, costs, self.token_budget)[index]
        else:
            ends = np.arange(1, slot.n_batches + 1, dtype=np.int64) * self.batch_size
        self._stages, self._batches = stages, start
        offset = int(ends[start - 1]) if start else 0
        k = int(np.searchsorted(slot.window_offsets, offset, side="right") - 1) if slot.n_cells else 0
        skip = offset - int(slot.window_offsets[k]) if slot.n_cells else 0
        carry: list[tuple] = []
        carried = 0
        while k < slot.n_windows and self._batches < len(ends):
            genes, offsets, ids, pads, rows = self._window(plan, seq, slot, k)
            rows = rows[skip:]
            skip = 0
            carry.append((genes, offsets, ids, pads, rows))
            carried += len(rows)
            while self._batches < len(ends) and carried >= (size := int(ends[self._batches]) - offset):
                batch, carry, carried = self._cut(carry, carried, size)
                offset += size
                self._batches += 1
                yield self._collate(batch, epoch)
            k += 1

    def _cut(self, carry: list[tuple], carried: int, size: int):
        """Take ``size`` cells from the front of the carried windows."""
        need, parts, rest = size, [], []
        for genes, offsets, ids, pads, rows in carry:
            take = rows[:need] if need else rows[:0]
            if len(take):
                parts.append((genes, offsets, ids, pads, take))
            if len(rows) > len(take):
                rest.append((genes, offsets, ids, pads, rows[len(take) :]))
            need -= len(take)
        return parts, rest, carried - size

    def _collate(self, parts: list[tuple], epoch: int) -> dict[str, Any]:
        all_genes, all_lengths, all_ids, all_pads = [], [], [], []
        for genes, offsets, ids, pads, rows in parts:
            starts, lengths = offsets[rows], offsets[rows + 1] - offsets[rows]
            flat = np.repeat(starts - np.cumsum(lengths) + lengths, lengths) + np.arange(lengths.sum())
            all_genes.append(genes[:, flat])
            all_lengths.append(lengths)
            all_ids.append(ids[rows])
            all_pads.append(pads[rows])
        lengths = np.concatenate(all_lengths)
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        ids = np.concatenate(all_ids)
        tokens = np.concatenate(all_genes, axis=1)
        batch = self.collator(tokens[0], offsets, ids, np.concatenate(all_pads), epoch, counts=tokens[1])
        if self.return_cell_ids:
            batch["cell_id"] = ids.tolist()
        return batch
