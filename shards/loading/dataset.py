"""``ShardedCellDataset``: an ``IterableDataset`` of ready batches, resumable exactly.

Each (rank, DataLoader worker) serves its slot of the epoch. ``__iter__`` reads as four steps: plan
(the sampling mode's epoch, ``modes``, and ``plan.plan_worker``: which slot, where to start), read
(windows: each lane's run of cells with one vectorized read, ``windows``), the mode's batches (its
``Schedule`` cuts them from the windows) and collate (truncate, specials, pad, mask). Batches are
whole: use the DataLoader with ``batch_size=None``.

The epoch lives in a shared-memory tensor, so ``set_epoch`` in the main process reaches persistent
workers too. ``state_dict`` is this worker's ``LoaderState`` (what torchdata's StatefulDataLoader
stores per worker); ``CellDataLoader`` keeps one rank-independent state instead and supports elastic
resumes. Options are a ``LoaderConfig``.

Long because it is the loader's one public class and keeps its whole contract together: options, the pickled
spec workers re-open, sizes, the resume state and the four steps of iteration; the sampling rules live in
``modes``, reading in ``windows`` and ``runs``."""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import IterableDataset

from ..errors import ShardError
from ..format.records import METADATA_COLUMNS
from ..plan.elastic import start_position
from ..plan.epoch import EpochPlan
from ..plan.mixing import Stream
from ..plan.state import LoaderState, Resume, Stage
from ..plan.topology import Topology
from ..plan.worker import WorkerPlan, plan_worker
from ..storage.remote import redact
from .batch import CellBatch, RaggedBatch
from .collate import Collator
from .config import LoaderConfig
from .device import DeviceCollator, pack_ragged
from .hashing import cell_hashes, salted
from .modes import SamplingMode, select_mode
from .obs import ObsColumns
from .packing import pack_on_host, plan_packing
from .panels import PanelFilter
from .readahead import ReadAhead
from .runs import RunReader
from .streams import MultiReader
from .transport import SlotRing
from .windows import RepeatCache, Window, read_window, slot_cells
from .world import detect_rank, worker_info

__all__ = ["ShardedCellDataset"]


#: settings a per-worker state must match (StatefulDataLoader restores it to the same worker)
_WORKER_KEYS = (
    "build_id",
    "split",
    "seed",
    "batch_size",
    "remainder",
    "balance_tokens",
    "world_size",
    "num_workers",
    "mix",
)


def _options(config: LoaderConfig | None, options: dict[str, Any]) -> LoaderConfig:
    """The config from ``config`` and/or keyword options (``vocab`` is the old name of ``vocab_join``)."""
    if "vocab" in options:
        warnings.warn("ShardedCellDataset(vocab=...) is now vocab_join=...", DeprecationWarning, stacklevel=3)
        options["vocab_join"] = options.pop("vocab")
    unknown = sorted(set(options) - set(LoaderConfig.field_names()))
    if unknown:
        raise ShardError(f"{unknown[0]}: not a loader option (options: {', '.join(LoaderConfig.field_names())})")
    if config is None:
        return LoaderConfig(**options)
    return LoaderConfig(**{**{k: getattr(config, k) for k in LoaderConfig.field_names()}, **options})


class ShardedCellDataset(IterableDataset):
    """``path``: one shard set, or several *streams* (``Stream`` or ``{path, weight|repeat|choose}``
    mappings) mixed per epoch; ``split``: the split to read; ``config`` or keyword options: a
    ``LoaderConfig``; ``rank``/``world_size``: an injected topology (else detected)."""

    def __init__(
        self,
        path: str | Path | Sequence[Stream | dict | str],
        split: str = "train",
        config: LoaderConfig | None = None,
        *,
        rank: int | None = None,
        world_size: int | None = None,
        **options: Any,
    ) -> None:
        self.config = _options(config, options)
        if (rank is None) != (world_size is None):
            raise ShardError("pass both rank and world_size, or neither (then they are detected)")
        single = isinstance(path, (str, Path))
        streams = [Stream(str(path))] if single else [Stream.parse(s, f"streams[{i}]") for i, s in enumerate(path)]
        self._source: tuple[bool, list[Stream]] = (single, streams)
        self.split = split
        self._rank = (rank, world_size) if rank is not None else None
        self._epoch = torch.zeros(1, dtype=torch.int64).share_memory_()
        self._batches = 0  # yielded in the current stage of the epoch by this process (worker)
        self._stages: tuple[Stage, ...] = ()  # finished stages of the current epoch (elastic resume)
        self._resume: Resume | None = None
        self._transport: tuple[int, int] | None = None  # (loader token, slots per worker): see use_transport
        self._open()

    def _open(self) -> None:
        """Open the shard set(s): manifests, vocabulary, cell offsets, labels, the collator. Done in the
        constructor and again in each DataLoader worker (see ``__getstate__``)."""
        cfg = self.config
        single, streams = self._source
        self.path = streams[0].path if single else ",".join(s.path for s in streams)
        self.reader = MultiReader(
            streams,
            self.split,
            vocab_join=cfg.vocab_join,
            cache_dir=cfg.cache_dir,
            cache_bytes=cfg.cache_bytes,
            storage_options=cfg.storage_options,
            io_threads=cfg.io_threads,
        )
        self.mode: SamplingMode = select_mode(self.reader, streams, cfg)
        try:
            self.collator = Collator(
                self.reader.vocab(),
                cfg.context_length,
                cfg.seed,
                mask_prob=cfg.mask_prob,
                value_bins=cfg.value_bins,
                masking=cfg.masking,
            )
        except ValueError as exc:
            raise ShardError(str(exc)) from None
        self.panels = None if cfg.panels is None else PanelFilter.build(cfg.panels, self.reader.vocab(), cfg.seed)
        mixed = self.mode.name != "plain" or len(streams) > 1 or cfg.vocab_join != "same" or cfg.panels
        self._mix = self._mix_identity() if mixed else None
        self.runs = RunReader(self.reader, cfg.on_error)
        self.obs = None if not cfg.obs_columns else self._obs_columns(cfg.obs_columns)
        self._cache: RepeatCache | None = None
        self._ring: SlotRing | None = None  # this worker's slots (made in the worker)

    def _mix_identity(self) -> str:
        """What a saved state of a mix must match (JSON): the streams, the mode's settings, the panels. A
        plain single shard set has none (its saved states keep the layout they always had)."""
        doc = {
            "streams": self.reader.identity(),
            **self.mode.identity(),
            "panels": self.panels.spec if self.panels else None,
        }
        return json.dumps(doc, sort_keys=True)

    def _obs_columns(self, names: list[str]) -> ObsColumns:
        """``batch["obs"]``'s reader; each column must be stored in every shard (checked on the first)."""
        readers = getattr(self.reader, "readers", [self.reader])
        for r in readers:
            stored = [*METADATA_COLUMNS, *r.manifest.obs_columns]
            missing = [n for n in names if n not in stored]
            if missing:
                raise ShardError(
                    f"obs_columns: {missing[0]!r} is not stored in {redact(r.root)} (columns: {', '.join(stored)}; "
                    "more with `ingest build --obs-columns`)"
                )
        return ObsColumns(names, self.reader, self.runs.skipped_shards)

    @property
    def skipped_cells(self) -> int:
        """Cells of shards that failed their integrity check, in this process (``on_error="skip"``)."""
        return self.runs.skipped_cells

    @property
    def skipped_shards(self) -> dict[str, str]:
        """Shard path -> why it was skipped, in this process (``on_error="skip"``)."""
        return self.runs.skipped_shards

    @property
    def repeat_cache(self) -> RepeatCache | None:
        """This process's cache of cells served again in the current epoch (sampled epochs; None else)."""
        return self._cache

    def device_collator(self) -> DeviceCollator:
        """What turns this dataset's ragged batches (``collate_on="device"``) into the batches the host
        collator would have built, on the device the batch was moved to."""
        return DeviceCollator.like(self.collator)

    def use_transport(self, token: int, slots: int) -> None:
        """Build batches in ``slots`` reused shared-memory slots per DataLoader worker, for the loader
        ``token`` (``CellDataLoader`` calls this; ``transport`` says why). The main process is unaffected."""
        self._transport = (token, slots)

    #: what a DataLoader worker receives: where the set is and how to read it, the run's position in the
    #: epoch and the epoch counter itself (a shared-memory tensor: ``set_epoch`` reaches persistent workers)
    _PICKLED = ("config", "_source", "split", "_rank", "_epoch", "_batches", "_stages", "_resume", "_transport")

    def __getstate__(self) -> dict[str, Any]:
        """A small spec, not the opened set: each worker re-opens the set itself (vocabulary, offsets,
        labels). ``multiprocessing`` writes a spawned worker's start-up data into a pipe before torch
        watches the worker; data larger than the pipe's buffer (64 KB) would block that write for ever if
        the worker died first. This stays ~1.2 KB whatever the vocabulary, so torch's own liveness check
        reports a worker that dies while starting."""
        return {k: self.__dict__[k] for k in self._PICKLED}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._open()

    # -- epoch and topology --------------------------------------------------------------------------
    def set_epoch(self, epoch: int) -> None:
        self._epoch.fill_(int(epoch))

    @property
    def epoch(self) -> int:
        return int(self._epoch.item())

    # -- size and description ------------------------------------------------------------------------
    def batches_per_rank(self, num_workers: int | None = None, epoch: int | None = None) -> int:
        """The batches this rank yields in a whole ``epoch`` (default: the current one) with
        ``num_workers`` DataLoader workers (default: this process's), from the plan alone: no shard is
        read (a token budget or token balancing reads the manifest's token counts). Every rank gets the
        same number."""
        epoch = self.epoch if epoch is None else int(epoch)
        workers = worker_info()[1] if num_workers is None else int(num_workers)
        rank, world = self._rank if self._rank is not None else detect_rank()
        cfg = self.config
        cells = self.mode.plan_epoch(epoch)
        tokens = self._tokens(cells)
        total = 0
        for role in range(max(workers, 1)):
            topo = Topology(rank, world, role, workers)
            w = plan_worker(cells.n_cells, topo, cfg.slot_options(), epoch=epoch, role=role, tokens=tokens)
            total += self.mode.n_batches(cells, w)
        return total

    def require_batches(self, num_workers: int, epoch: int | None = None, spell: Callable[[str], str] = str) -> int:
        """``batches_per_rank``, refusing a plan of none: a training loop over epochs of no batches never
        reaches its step count (it would spin for ever). The error names the batch size, the cells each
        rank and worker gets and what to change; ``spell`` writes an option's name as the caller's user
        knows it (``data.batch_size``, ``--batch-size``)."""
        n = self.batches_per_rank(num_workers, epoch)
        if n > 0:
            return n
        cfg = self.config
        cells = self.mode.plan_epoch(self.epoch if epoch is None else int(epoch)).n_cells
        world = self.topology().world_size
        workers = max(int(num_workers), 1)
        per_worker = cells // world // workers
        size = f"{spell('token_budget')}={cfg.token_budget}" if cfg.token_budget else ""
        size = size or f"{spell('batch_size')}={cfg.batch_size}"
        raise ShardError(
            f"{size}: 0 batches per rank in split {self.split!r} of {self.path} ({cells:,} cells over {world} "
            f"rank(s) x {workers} loader worker(s): about {per_worker:,} cells each, and "
            f"{spell('remainder')}={cfg.remainder!r} drops a partial batch); use {spell('batch_size')} <= "
            f"{max(per_worker, 1):,}, {spell('remainder')}=pad, or fewer ranks or workers"
        )

    def __len__(self) -> int:
        """Batches per rank in the current epoch, as this process would iterate them (``batches_per_rank``;
        a ``CellDataLoader`` with workers: ``loader.batches_per_rank()``)."""
        return self.batches_per_rank()

    def __repr__(self) -> str:
        cfg = self.config
        rank, world = self._rank if self._rank is not None else detect_rank()
        default = LoaderConfig()
        extras = [
            f"{name}={getattr(cfg, name)!r}"
            for name in ("value_bins", "token_budget", "num_samples", "group_by", "collate_on", "vocab_join")
            if getattr(cfg, name) != getattr(default, name)
        ]
        return (
            f"ShardedCellDataset({self.path!r}, split={self.split!r}, cells={int(self.reader.cell_starts[-1]):,}, "
            f"batch_size={cfg.batch_size}, context_length={cfg.context_length}, seed={cfg.seed}, epoch={self.epoch}, "
            f"rank={rank}/{world}{', ' if extras else ''}{', '.join(extras)})"
        )

    def topology(self) -> Topology:
        rank, world = self._rank if self._rank is not None else detect_rank()
        worker, workers = worker_info()
        return Topology(rank, world, worker, workers)

    # -- state ---------------------------------------------------------------------------------------
    def identity(self, world_size: int, num_workers: int) -> LoaderState:
        """What a saved state must match (its position fields at zero)."""
        cfg = self.config
        settings = {k: getattr(cfg, k) for k in ("seed", "batch_size", "remainder", "balance_tokens", "token_budget")}
        return LoaderState(
            self.reader.build_id, self.split, **settings, world_size=world_size, num_workers=num_workers, mix=self._mix
        )

    def state_dict(self) -> dict[str, Any]:
        """This process's (worker's) position, as torchdata's StatefulDataLoader stores per worker."""
        topo = self.topology()
        state = self.identity(topo.world_size, topo.num_workers)
        return state.with_position(self.epoch, self._batches, self._stages).to_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """A per-worker state (``state_dict``), restored by StatefulDataLoader to the same worker."""
        saved = LoaderState.from_dict(state)
        topo = self.topology()
        saved.check_matches(self.identity(topo.world_size, topo.num_workers), _WORKER_KEYS)
        self.set_epoch(saved.epoch)
        self.resume_from(Resume(saved.epoch, saved.batches, saved.stages, per_rank=False))

    def resume_from(self, resume: Resume | None) -> None:
        """Start the next iteration of ``resume.epoch`` where ``resume`` says (``CellDataLoader`` calls
        this with a rank-independent position before it starts its workers)."""
        self._resume = resume

    def check_state(self, state: LoaderState, world_size: int, num_workers: int) -> bool:
        """Validate a rank-independent loader state; True when it continues the same stage (same world)."""
        cfg = self.config
        mine = self.identity(world_size, num_workers)
        state.check_matches(mine, ("build_id", "split", "seed", "remainder", "balance_tokens", "token_budget", "mix"))
        same = (state.world_size, state.num_workers, state.batch_size) == (world_size, num_workers, cfg.batch_size)
        if not same and cfg.token_budget is not None:
            raise ShardError("cannot resume a token-budget run on another world size, batch size or workers")
        refusal = self.mode.resume_refusal()
        if not same and refusal is not None:
            raise ShardError(refusal)
        if not same and state.world_size * state.batch_size != world_size * cfg.batch_size:
            raise ShardError(
                f"cannot resume on {world_size} ranks x batch_size {cfg.batch_size}: the saved run had "
                f"{state.world_size} x {state.batch_size}; keep the global batch size equal "
                f"(set --data.batch_size={state.world_size * state.batch_size // world_size})"
            )
        return same

    # -- iteration -----------------------------------------------------------------------------------
    def plan(self, epoch: int, topo: Topology) -> tuple[EpochPlan, WorkerPlan]:
        """(the epoch's cells, this worker's plan) for the next iteration: pure planning, no reads but
        the token counts that token balancing and budgets need."""
        cfg = self.config
        resume, self._resume = self._resume, None
        stages, role, start = start_position(resume, epoch, topo.worker, topo.num_workers)
        cells = self.mode.plan_epoch(epoch)
        tokens = self._tokens(cells)
        worker = plan_worker(
            cells.n_cells, topo, cfg.slot_options(), epoch=epoch, role=role, stages=stages, start=start, tokens=tokens
        )
        self._stages, self._batches = tuple(stages), start
        return cells, worker

    def _tokens(self, cells: EpochPlan) -> np.ndarray | None:
        """Per-cell token counts in the epoch's order, when token balancing or a budget needs them."""
        if self.config.balance_tokens or self.config.token_budget:
            return cells.gather(self.reader.cell_tokens).astype(np.int64)
        return None

    def __iter__(self) -> Iterator[CellBatch | RaggedBatch]:
        epoch = self.epoch
        cells, worker = self.plan(epoch, self.topology())  # plan
        schedule = self.mode.schedule(cells, worker)  # the mode's batches
        if worker.start >= schedule.n_batches:
            return
        self._start_cache(cells, worker, schedule.first_window)
        with self._reads(cells, worker, schedule.first_window, schedule.last_needed) as windows:  # read
            for b, parts, pad in schedule.serve(windows.get):
                self._batches = b + 1
                yield self._collate(parts, epoch, extra_pad=pad)  # collate

    def _reads(self, cells: EpochPlan, worker: WorkerPlan, first: int, last_needed: int) -> ReadAhead[Window]:
        """Windows from ``first`` on, ``read_ahead`` of them read ahead in a background thread, up to the
        one holding slot position ``last_needed`` (so that no window is read that the epoch does not use:
        reads have effects, e.g. a skipped shard's counters)."""
        offsets = worker.slot.window_offsets
        stop = min(worker.slot.n_windows, int(np.searchsorted(offsets, last_needed, side="right")))
        return ReadAhead(lambda k: self._window(cells, worker, k), first, stop, self.config.read_ahead)

    def _window(self, cells: EpochPlan, worker: WorkerPlan, k: int) -> Window:
        """Window ``k``, read run by run (``windows.read_window``)."""
        return read_window(cells, worker.seq, worker.slot, k, self.runs.read, self._cache)

    def _start_cache(self, cells: EpochPlan, worker: WorkerPlan, k: int) -> None:
        """A sampled epoch's repeats are read once per slot and held until their last use."""
        self._cache = None
        if cells.sampled and self.config.repeat_cache_bytes:
            cache = RepeatCache(*slot_cells(cells, worker.seq, worker.slot, k), self.config.repeat_cache_bytes)
            self._cache = cache if cache else None

    def _collate(self, parts: list[Window], epoch: int, extra_pad: np.ndarray | None = None) -> CellBatch | RaggedBatch:
        taken = [part.take() for part in parts]
        lengths = np.concatenate([t.lengths for t in taken])
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        ids = np.concatenate([t.ids for t in taken])
        tokens = np.concatenate([t.tokens for t in taken], axis=1)
        pads = np.concatenate([t.pads for t in taken])
        copies = np.concatenate([t.copies for t in taken])
        if extra_pad is not None:
            pads = pads | extra_pad
        genes, counts = tokens[0], tokens[1]
        if self.panels is not None:
            genes, counts, offsets = self.panels(genes, counts, offsets, ids, epoch)
        ring = self._worker_ring()
        alloc = ring.alloc if ring is not None else None
        context = self.config.context_length
        plan = None
        if self.config.pack:  # the cells' token counts, <cls> and <eos> included
            plan = plan_packing(np.minimum(np.diff(offsets), context - 2) + 2, context)
        if self.config.collate_on == "device":
            cells = salted(cell_hashes(ids), copies)
            bins = counts if self.config.value_bins else None
            batch = pack_ragged(
                genes, offsets, cells, pads, bins, epoch=epoch, context_length=context, alloc=alloc, plan=plan
            )
        elif plan is not None:
            batch = self.collator(genes, offsets, ids, pads, epoch, counts=counts, copies=copies)
            batch = pack_on_host(batch, plan, self.collator.vocab.special["<pad>"], alloc)
        else:
            batch = self.collator(genes, offsets, ids, pads, epoch, counts=counts, copies=copies, alloc=alloc)
        if self.config.return_cell_ids:
            batch["cell_id"] = ids.tolist()
        if self.obs is not None:
            batch["obs"] = self.obs(np.concatenate([part.take_keys() for part in parts]))
        return ring.wrap(batch) if ring is not None else batch

    def _worker_ring(self) -> SlotRing | None:
        """This DataLoader worker's slots (None in the main process or without a transport)."""
        if self._transport is None or worker_info()[1] == 0:
            return None
        if self._ring is None:
            self._ring = SlotRing(*self._transport)
        return self._ring
