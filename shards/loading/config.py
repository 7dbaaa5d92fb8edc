"""``LoaderConfig``: every option of the streaming loader, typed, documented and checked in one place.

It is what ``ShardedCellDataset`` takes (``ShardedCellDataset(path, config)`` or the same fields as
keyword arguments), what the training config's ``data`` section is made of (``training``'s data module
forwards its keyword arguments here, so ``--data.batch_size`` and ``--help`` come from these fields),
and what ``python -m shards stream`` builds its flags from. Each attribute's docstring is its help
text and its row in ``docs/OPTIONS.md``. What a loader reads (the shard set or streams, and the split)
and where it runs (rank, world size) are not options: they are given when the dataset is built.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

from ..errors import ShardError
from ..plan.slots import REMAINDER_POLICIES
from ..plan.weighting import Weighting
from .panels import PanelSpec

if TYPE_CHECKING:
    from ..plan.worker import SlotOptions

__all__ = ["COLLATE_ON", "ON_ERROR", "VOCAB_MODES", "LoaderConfig"]

ON_ERROR = ("raise", "skip")
COLLATE_ON = ("host", "device")
#: how streams' vocabularies join: identical, or one token space by gene id (``streams.MultiReader``)
VOCAB_MODES = ("same", "remap")


@dataclass(frozen=True)
class LoaderConfig:
    """How cells are batched, masked and sampled."""

    batch_size: int = 32
    """Cells per batch (per rank)."""
    context_length: int = 2048
    """Tokens per cell, ``<cls>`` and ``<eos>`` included; a longer cell keeps its top-ranked genes."""
    seed: int = 0
    """Seeds the shard order, the shuffle windows, the masks and every draw (with the epoch)."""
    remainder: str = "drop"
    """The cells left over by whole batches on every rank: ``drop`` (other cells each epoch) or ``pad``
    (repeats of the epoch's first cells, with zero loss weight)."""
    lanes: int = 4
    """Shuffle window: runs read from this many evenly spaced points of a worker's span at once."""
    lane_cells: int = 256
    """Shuffle window: consecutive cells read per lane (a window holds ``lanes * lane_cells`` cells)."""
    return_cell_ids: bool = False
    """Put each batch's cell ids in ``batch["cell_id"]`` (for callbacks that log or audit the cells)."""
    mask_prob: float = 0.15
    """Share of each cell's gene tokens masked for the objective (``max(1, round(p * n))`` of them; BERT's
    80/10/10 replacement), as Geneformer (0.15); in (0, 1)."""
    obs_columns: list[str] | None = None
    """Metadata columns of each cell to put in ``batch["obs"]`` (e.g. ``[cell_type, donor_id]``): a dict
    of lists (numeric columns: 1-D tensors), in batch order; read per shard, never held for the corpus."""
    masking: bool = True
    """Mask genes for the masked-gene objective; ``False`` (inference: embedding cells) gives the tokens as
    stored, ``labels`` all -100."""
    cache_dir: str | None = None
    """Remote shard sets: keep whole shards here (sha256-checked on download, least recently used evicted)."""
    cache_bytes: int | None = None
    """Remote shard sets: the size limit of ``cache_dir`` (give both or neither)."""
    storage_options: dict[str, Any] | None = None
    """Remote shard sets: fsspec options (endpoint, credentials; never written to a run's files)."""
    on_error: str = "raise"
    """A shard that fails an integrity check: ``raise``, or ``skip`` it for the rest of the run (its cells
    become zero-weight placeholders, so every rank keeps its batch count)."""
    value_bins: int = 0
    """scGPT-style value bins of each cell's counts in ``batch["values"]`` (0: off, else at least 2)."""
    balance_tokens: bool = False
    """Balance the tokens, not only the cells, across ranks and workers (within ~1%)."""
    balance_chunk: int = 64
    """Token balancing: cells per chunk dealt to the slots (divides the batch size)."""
    token_budget: int | None = None
    """Batches of at most this many padded tokens instead of ``batch_size`` cells (the epoch's batch plan
    is computed up front, so every rank agrees on the count)."""
    pack: bool = False
    """Sequence packing: a batch's cells side by side in rows of ``context_length`` (first-fit decreasing),
    each with its own ``<cls>``, positions restarting per cell, attention confined to the cell
    (``batch["segments"]``, ``batch["positions"]``). The same cells as unpacked, in fewer computed tokens."""
    repeat_cache_bytes: int = 256 << 20
    """Sampled epochs: bytes per process for cells served again later in the epoch (read once, held)."""
    read_ahead: int = 1
    """Windows each loader process reads ahead in a background thread while it collates (0: read in the
    same thread). Decoding releases the GIL, so one window ahead overlaps reading with collating on any
    machine with a spare core; batches are the same either way."""
    io_threads: int = 1
    """Threads each loader process decodes a read with: 1, the reading thread alone; 2, Zarr's genes and
    counts (or a WebDataset run's two halves) at once. Decoding releases the GIL: worth it where each
    loader process has more than ~1.5 cores to itself (the read-ahead thread already keeps one busy)."""
    collate_on: str = "host"
    """Where batches are padded and masked: ``host`` (the loader's processes yield ready batches) or
    ``device`` (they yield the ragged cells in one buffer, ~4 bytes a token instead of ~17, and the
    trainer pads and masks them on the accelerator, bit-identical to ``host``; outside the trainer, call
    ``dataset.device_collator()`` on each batch after moving it)."""
    vocab_join: str = "same"
    """Streams: ``same`` (their vocabularies must be identical) or ``remap`` (one token space, the union by
    gene id; the first stream keeps its token ids)."""
    num_samples: int | None = None
    """Cells per epoch (default: the streams' natural total)."""
    replacement: bool = False
    """Draw cells with replacement (default: each cell at most ``ceil(n / N)`` times per epoch)."""
    weighting: Weighting | None = None
    """Weight cells by a metadata column: ``{column, scheme, smoothing, table, default, curriculum_epochs}``."""
    group_by: str | None = None
    """A metadata column: every batch holds cells of one of its values (e.g. ``dataset_id``)."""
    group_pool_cells: int | None = None
    """``group_by``: at most this many cells wait in each loader process for their group's batch; when the
    pool is full the largest group is topped up from the next (a mixed batch). Equal batch counts on every
    rank without reading every cell's group. Default: 16,384 (or ``batch_size``, if larger)."""
    group_exact: bool = False
    """``group_by`` with the exact schedule instead of the bounded pool: one group per batch, each group's
    last batch padded or dropped (``remainder``); every cell's group is held in every loader process and
    planned there (O(cells): 50 s and 11.7 GB at 160M cells)."""
    panels: PanelSpec | None = None
    """Keep only a gene panel's tokens: ``{files: [csv | {path, organism}]}`` or ``{random_genes: N}``."""

    def __post_init__(self) -> None:
        if isinstance(self.weighting, dict):
            object.__setattr__(self, "weighting", Weighting.parse(self.weighting))
        if isinstance(self.panels, dict):
            object.__setattr__(self, "panels", PanelSpec.parse(self.panels))
        self.check()

    def check(self) -> None:
        """Every option's own check; each error names its option."""
        if self.batch_size < 1:
            raise ShardError(f"batch_size={self.batch_size}: must be at least 1")
        if self.context_length < 3:
            raise ShardError(f"context_length={self.context_length}: must be at least 3 (<cls>, a gene, <eos>)")
        if self.remainder not in REMAINDER_POLICIES:
            raise ShardError(f"remainder={self.remainder!r}: choose one of {list(REMAINDER_POLICIES)}")
        if self.on_error not in ON_ERROR:
            raise ShardError(f"on_error={self.on_error!r}: choose raise (refuse a corrupt shard) or skip")
        if self.token_budget is not None and self.token_budget < self.context_length:
            raise ShardError(f"token_budget={self.token_budget}: must be at least context_length={self.context_length}")
        if self.io_threads < 1:
            raise ShardError(f"io_threads={self.io_threads}: must be at least 1 (the reading thread itself)")
        if self.read_ahead < 0:
            raise ShardError(f"read_ahead={self.read_ahead}: must be 0 (off) or more windows")
        if self.collate_on not in COLLATE_ON:
            raise ShardError(f"collate_on={self.collate_on!r}: choose host or device")
        if self.lanes < 1 or self.lane_cells < 1:
            raise ShardError(f"lanes={self.lanes}, lane_cells={self.lane_cells}: must be at least 1")
        if not 0 < self.mask_prob < 1:
            raise ShardError(f"mask_prob={self.mask_prob}: must be in (0, 1)")
        if self.value_bins == 1 or self.value_bins < 0:
            raise ShardError(f"value_bins={self.value_bins}: use 0 (off) or at least 2")
        if (self.cache_dir is None) != (self.cache_bytes is None):
            raise ShardError("cache_dir and cache_bytes: give both or neither (a cache needs a size limit)")
        if self.vocab_join not in VOCAB_MODES:
            raise ShardError(
                f"vocab_join={self.vocab_join!r}: choose same (identical vocabularies) or remap (join by gene id)"
            )
        if self.num_samples is not None and self.num_samples < 1:
            raise ShardError(f"num_samples={self.num_samples}: must be at least 1")
        if self.group_pool_cells is not None and (self.group_by is None or self.group_pool_cells < self.batch_size):
            raise ShardError(
                f"group_pool_cells={self.group_pool_cells}: needs group_by and at least batch_size={self.batch_size}"
            )
        if self.group_exact and (self.group_by is None or self.group_pool_cells is not None):
            raise ShardError(
                "group_exact: needs group_by, and takes no group_pool_cells (the exact schedule has no pool)"
            )
        if self.group_by is not None and self.token_budget is not None:
            raise ShardError("group_by and token_budget do not combine: grouped batches have batch_size cells")

    @property
    def sampled(self) -> bool:
        """Does an epoch draw its cells (a fixed size, replacement, weights) rather than serve each once?"""
        return bool(self.num_samples or self.replacement or self.weighting)

    def slot_options(self) -> SlotOptions:
        """What a worker's plan (``plan.plan_worker``) takes of these options."""
        from ..plan.worker import SlotOptions  # numba (token budgets): loaded by a plan, not to parse options

        return SlotOptions(**{f.name: getattr(self, f.name) for f in fields(SlotOptions)})

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))
