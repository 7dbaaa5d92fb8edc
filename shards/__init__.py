"""cellshard's shard stage: the on-disk formats with their sealed manifest (``format``), the pure epoch
planner (``plan``), the streaming loader (``loading``) and storage (``storage``).

Layers import downwards only: ``plan`` nothing of the others, ``format`` and ``storage`` nothing of
``loading`` (a test checks it; ``docs/ARCHITECTURE.md`` draws the picture). The loader's classes import
torch; they are loaded on first use so that the ingest CLI and its worker processes, which only write
and check shards, start without it (about 1.2 s per process here).
"""

from . import loading as _loading
from .errors import CellshardError, ShardError
from .format import (
    FORMAT_VERSION,
    FORMATS,
    INDEX_NAME,
    METADATA_COLUMNS,
    SPECIAL_TOKENS,
    CellBlock,
    CellRun,
    Fault,
    Manifest,
    ShardEntry,
    ShardFormat,
    Vocabulary,
    dump_manifest,
    get_format,
    load_manifest,
    read_manifest,
    read_vocab,
    verify_shard_set,
    vocab_to_csv,
)
from .loading import CellBatch, LoaderConfig, MultiReader, PanelFile, PanelSpec, ShardSetReader, detect_rank
from .plan import DistributedShardSampler, LoaderState, Stage, Stream, Topology, Weighting, plan_epoch

__all__ = [
    "FORMATS",
    "FORMAT_VERSION",
    "INDEX_NAME",
    "METADATA_COLUMNS",
    "SPECIAL_TOKENS",
    "CellBatch",
    "CellBlock",
    "CellDataLoader",
    "CellRun",
    "CellshardError",
    "Collator",
    "DistributedShardSampler",
    "Fault",
    "LoaderConfig",
    "LoaderState",
    "Manifest",
    "MultiReader",
    "PanelFile",
    "PanelSpec",
    "ShardEntry",
    "ShardError",
    "ShardFormat",
    "ShardSetReader",
    "ShardedCellDataset",
    "Stage",
    "Stream",
    "Topology",
    "Vocabulary",
    "Weighting",
    "detect_rank",
    "dump_manifest",
    "get_format",
    "load_manifest",
    "plan_epoch",
    "read_manifest",
    "read_vocab",
    "verify_shard_set",
    "vocab_to_csv",
]


def __getattr__(name: str):
    """The loader's torch classes, loaded on first use (``shards.loading`` says which)."""
    return getattr(_loading, name)
