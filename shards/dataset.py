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

import json
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import IterableDataset

from . import pool
from .collate import Collator
from .errors import ShardError
from .grouping import equalize, group_batches
from .mixing import draw_counts, sampled_plan, stream_counts
from .panels import PanelFilter
from .sampler import (
    REMAINDER_POLICIES,
    SlotPlan,
    budget_plan,
    plan_epoch,
    plan_slots,
    remaining_sequence,
    stream_positions,
    worker_batches,
)
from .streams import MultiReader, Stream
from .topology import Topology, detect_rank, worker_info
from .weighting import Weighting, class_weights, curriculum_alpha, draw_probabilities
from .windows import RepeatCache, read_window, slot_cells, take_rows

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


def _check_settings(state: dict[str, Any], mine: dict[str, Any], keys: tuple[str, ...]) -> None:
    """Refuse a saved loader state whose version or settings ``keys`` differ from this run's."""
    if state.get("version") != STATE_VERSION:
        raise ShardError(f"loader state version {state.get('version')} is not {STATE_VERSION}; cannot resume")
    for key in keys:
        if state.get(key) != mine.get(key):
            what = {"build_id": "shard set", "mix": "streams/sampling"}.get(key, key)
            raise ShardError(f"cannot resume: the saved loader state has {what}={state.get(key)!r}, this run has "
                             f"{mine.get(key)!r}; resume with the same data settings")  # fmt: skip


class ShardedCellDataset(IterableDataset):
    """``path``: one shard set, or several *streams* (``Stream`` or ``{path, weight|repeat|choose}``
    mappings) mixed per epoch (``mixing``); ``vocab="remap"`` joins streams' vocabularies by gene id.
    ``num_samples`` fixes the cells per epoch, ``replacement`` draws with replacement, ``weighting``
    weights cells by a metadata column (``weighting.Weighting``, with a curriculum), ``group_by`` makes
    every batch one group's (``grouping``), ``panels`` restricts tokens to gene panels (``panels``)."""

    def __init__(
        self,
        path: str | Path | Sequence[Stream | dict | str],
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
        repeat_cache_bytes: int = 256 << 20,
        vocab: str = "same",
        num_samples: int | None = None,
        replacement: bool = False,
        weighting: Weighting | dict | None = None,
        group_by: str | None = None,
        panels: dict | None = None,
    ) -> None:
        check_options(batch_size=batch_size, context_length=context_length, remainder=remainder,
                      on_error=on_error, token_budget=token_budget)  # fmt: skip
        if (rank is None) != (world_size is None):
            raise ShardError("pass both rank and world_size, or neither (then they are detected)")
        single = isinstance(path, (str, Path))
        streams = [Stream(str(path))] if single else [Stream.parse(s, f"streams[{i}]") for i, s in enumerate(path)]
        self.path = str(path) if single else ",".join(s.path for s in streams)
        self.reader = MultiReader(streams, split, vocab=vocab, cache_dir=cache_dir, cache_bytes=cache_bytes,
                                  storage_options=storage_options)  # fmt: skip
        self.weighting = None if weighting is None else Weighting.parse(weighting)
        if group_by is not None and token_budget is not None:
            raise ShardError("group_by and token_budget do not combine: grouped batches have batch_size cells")
        self.num_samples, self.replacement, self.group_by = num_samples, replacement, group_by
        self.repeat_cache_bytes = repeat_cache_bytes  # per process: cells served again later in the epoch
        self._cache: RepeatCache | None = None
        self.sampled = bool(num_samples or replacement or self.weighting
                            or any(s.kind()[0] != "natural" for s in streams))  # fmt: skip
        if self.sampled:  # checked now, not in a worker: an impossible mix fails at construction
            stream_counts(self.reader.stream_sizes(), [s.kind() for s in streams], num_samples)
        # labels are read once, here in the main process, and reach spawned workers as shared memory
        self._weight_codes = self._codes(self.weighting.column) if self.weighting else None
        self._group_codes = self._codes(group_by) if group_by else None
        try:
            self.collator = Collator(self.reader.vocab(), context_length, seed, value_bins=value_bins)
        except ValueError as exc:
            raise ShardError(str(exc)) from None
        self.panels = None if panels is None else PanelFilter.parse(panels, self.reader.vocab(), seed)
        mixed = self.sampled or len(streams) > 1 or vocab != "same" or group_by or panels is not None
        self._mix = json.dumps({"streams": self.reader.identity(), "num_samples": num_samples,
                                "replacement": replacement, "group_by": group_by,
                                "weighting": self.weighting.as_dict() if self.weighting else None,
                                "panels": self.panels.spec if self.panels else None},
                               sort_keys=True) if mixed else None  # fmt: skip
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

    # -- streams, labels and the epoch's cells -----------------------------------------------------
    def _codes(self, column: str) -> tuple[torch.Tensor, list[str]]:
        """Every cell's value of a metadata column as a code (all streams, shard after shard), and the
        values; in shared memory, so spawned workers get them without a copy or a re-read."""
        values = np.concatenate([self.reader.column(i, column) for i in range(len(self.reader.shards))])
        missing = pd.isna(values)
        if missing.any():
            at = int(np.flatnonzero(missing)[0])
            shard = int(np.searchsorted(self.reader.cell_starts, at, side="right")) - 1
            raise ShardError(f"{self.reader.shards[shard]['path']}: {int(missing.sum())} cells have no {column} "
                             "value; fill it at ingest or weight/group by another column")  # fmt: skip
        codes, uniques = pd.factorize(values.astype(str), sort=True)
        return torch.from_numpy(codes.astype(np.int32)).share_memory_(), [str(u) for u in uniques]

    def _plan(self, epoch: int):
        """The epoch's plan: every shard once (plain), or the drawn cells of the mix (``mixing``)."""
        if not self.sampled:
            plan, _ = plan_epoch(self.reader.shard_cells, world_size=1, num_workers=0, batch_size=1,
                                 seed=self.seed, epoch=epoch)  # fmt: skip
            return plan
        sizes = self.reader.stream_sizes()
        wanted = stream_counts(sizes, [s.kind() for s in self.reader.streams], self.num_samples)
        counts = []
        for k, n in enumerate(wanted.tolist()):
            cells = self.reader.stream_cells(k)
            probs = None
            where = f"stream {self.reader.names[k]} ({self.reader.readers[k].root})"
            if self.weighting is not None:
                codes, names = self._weight_codes
                codes = codes.numpy()[cells]
                per_class = class_weights(self.weighting, np.asarray(names, dtype=object),
                                          np.bincount(codes, minlength=len(names)), where)  # fmt: skip
                probs = draw_probabilities(codes, per_class,
                                           curriculum_alpha(epoch, self.weighting.curriculum_epochs))  # fmt: skip
            rng = np.random.default_rng([self.seed, epoch, 2, k])
            counts.append(draw_counts(n, probs, sizes[k], replacement=self.replacement, rng=rng, where=where))
        return sampled_plan(self.reader.shard_cells, np.concatenate(counts), seed=self.seed, epoch=epoch)

    def _shard_codes(self, shard: int) -> np.ndarray:
        starts = self.reader.cell_starts
        return self._group_codes[0].numpy()[starts[shard] : starts[shard + 1]]

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
        out = {"version": STATE_VERSION, "build_id": self.reader.build_id, "split": self.split,
               "seed": self.seed, "batch_size": self.batch_size, "remainder": self.remainder,
               "balance_tokens": self.balance_tokens, "token_budget": self.token_budget,
               "world_size": topo.world_size, "num_workers": topo.num_workers}  # fmt: skip
        if self._mix is not None:  # absent for one plain shard set: its saved states stay valid
            out["mix"] = self._mix
        return out

    def state_dict(self) -> dict[str, Any]:
        """This process's (worker's) position, as torchdata's StatefulDataLoader stores per worker."""
        return {**self._identity(self.topology()), "epoch": self.epoch, "batches": self._batches,
                "stages": self._stages}  # fmt: skip

    def load_state_dict(self, state: dict[str, Any]) -> None:
        _check_settings(state, self._identity(self.topology()), ("build_id", "split", "seed", "batch_size",
                        "remainder", "balance_tokens", "world_size", "num_workers", "mix"))  # fmt: skip
        self.set_epoch(int(state["epoch"]))
        self._resume = {"epoch": int(state["epoch"]), "start": int(state["batches"]), "stages": state.get("stages", [])}

    def check_state(self, state: dict[str, Any], world_size: int, num_workers: int) -> bool:
        """Validate a rank-independent loader state; True when it continues the same stage (same world)."""
        mine = {**self._identity(Topology(0, world_size)), "num_workers": num_workers}
        _check_settings(
            state, mine, ("build_id", "split", "seed", "remainder", "balance_tokens", "token_budget", "mix")
        )
        same = all(state[k] == mine[k] for k in ("world_size", "num_workers", "batch_size"))
        if not same and self.token_budget is not None:
            raise ShardError("cannot resume a token-budget run on another world size, batch size or workers")
        if not same and self.group_by is not None:
            raise ShardError("cannot resume a group_by run on another world size, batch size or workers")
        if not same and state["world_size"] * state["batch_size"] != world_size * self.batch_size:
            raise ShardError(
                f"cannot resume on {world_size} ranks x batch_size {self.batch_size}: the saved run had "
                f"{state['world_size']} x {state['batch_size']}; keep the global batch size equal "
                f"(set --data.batch_size={state['world_size'] * state['batch_size'] // world_size})"
            )
        return same

    # -- iteration -----------------------------------------------------------------------------------
    def _window(self, plan, seq: np.ndarray, slot: SlotPlan, k: int):
        """Window ``k``, read run by run (``windows.read_window``)."""
        return read_window(plan, seq, slot, k, self._read_run, self._cache)

    def _start_cache(self, plan, seq: np.ndarray, slot: SlotPlan, k: int) -> None:
        """A sampled epoch's repeats are read once per slot and held until their last use."""
        self._cache = None
        if plan.cells is not None and self.repeat_cache_bytes:
            cache = RepeatCache(*slot_cells(plan, seq, slot, k), self.repeat_cache_bytes)
            self._cache = cache if cache else None

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
        plan = self._plan(epoch)
        tokens = None
        if self.balance_tokens or self.token_budget:  # per-cell token counts in this epoch's sequence order
            tokens = plan.gather(self.reader.cell_tokens).astype(np.int64)
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
        if self.group_by is not None:
            yield from self._grouped(plan, seq, slots, index, stages, start, epoch)
            return
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
        self._start_cache(plan, seq, slot, k)
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

    def _grouped(self, plan, seq: np.ndarray, slots: list[SlotPlan], index: int, stages: list, start: int,
                 epoch: int) -> Iterator[dict[str, Any]]:  # fmt: skip
        """Grouped batches (``grouping``): windows are read in order and each cell waits in a pool until
        the batch of its group that takes it is served (``pool``)."""
        codes = plan.gather(self._shard_codes)
        n = len(seq)

        def labels(slot: SlotPlan) -> np.ndarray:
            at = slot.to_sequence(stream_positions(slot, slot.n_cells))
            return codes[seq[np.where(at >= n, at - n, at) % n]]

        mine = equalize([group_batches(labels(s), self.batch_size, policy=self.remainder) for s in slots],
                        self.remainder)[index]  # fmt: skip
        slot = slots[index]
        self._stages, self._batches = stages, start
        if start >= mine.n_batches:
            return
        yield from pool.serve(self, plan, seq, slot, mine, epoch)

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

    def _collate(self, parts: list[tuple], epoch: int, extra_pad: np.ndarray | None = None) -> dict[str, Any]:
        all_genes, all_lengths, all_ids, all_pads = [], [], [], []
        for genes, offsets, ids, pads, rows in parts:
            taken, taken_offsets = take_rows(genes, offsets, rows)
            all_genes.append(taken)
            all_lengths.append(np.diff(taken_offsets))
            all_ids.append(ids[rows])
            all_pads.append(pads[rows])
        lengths = np.concatenate(all_lengths)
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        ids = np.concatenate(all_ids)
        tokens = np.concatenate(all_genes, axis=1)
        pads = np.concatenate(all_pads) if extra_pad is None else np.concatenate(all_pads) | extra_pad
        genes, counts = tokens[0], tokens[1]
        if self.panels is not None:
            genes, counts, offsets = self.panels(genes, counts, offsets, ids, epoch)
        batch = self.collator(genes, offsets, ids, pads, epoch, counts=counts)
        if self.return_cell_ids:
            batch["cell_id"] = ids.tolist()
        return batch
