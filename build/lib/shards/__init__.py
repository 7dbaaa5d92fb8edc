"""cellshard's shard stage: the on-disk formats with their sealed manifest (``format``), the pure epoch
planner (``plan``), the streaming loader (``loading``), the tokens a shard stores (``tokens``) and
storage (``storage``).

Layers import downwards only: ``plan`` nothing of the others, ``format`` and ``storage`` nothing of
``loading`` (a test checks it; ``docs/ARCHITECTURE.md`` draws the picture). Every public name loads on
first use (``import shards`` reads no numba, pandas, zarr or torch): processes that only write or check
shards (ingest workers, ``ingest verify``) start without torch, and a ``--help`` starts at once.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

from .errors import CellshardError, ShardError

if TYPE_CHECKING:  # for type checkers and IDEs; at run time each name loads on first use
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
    from .loading import (
        CellBatch,
        CellDataLoader,
        Collator,
        LoaderConfig,
        MultiReader,
        PanelFile,
        PanelSpec,
        ShardedCellDataset,
        ShardSetReader,
        detect_rank,
    )
    from .plan import DistributedShardSampler, LoaderState, Stage, Stream, Topology, Weighting, plan_epoch

_FORMAT = (
    "FORMATS",
    "FORMAT_VERSION",
    "INDEX_NAME",
    "METADATA_COLUMNS",
    "SPECIAL_TOKENS",
    "CellBlock",
    "CellRun",
    "Fault",
    "Manifest",
    "ShardEntry",
    "ShardFormat",
    "Vocabulary",
    "dump_manifest",
    "get_format",
    "load_manifest",
    "read_manifest",
    "read_vocab",
    "verify_shard_set",
    "vocab_to_csv",
)
_LOADING = (
    "CellBatch",
    "CellDataLoader",
    "Collator",
    "LoaderConfig",
    "MultiReader",
    "PanelFile",
    "PanelSpec",
    "ShardSetReader",
    "ShardedCellDataset",
    "detect_rank",
)
_PLAN = ("DistributedShardSampler", "LoaderState", "Stage", "Stream", "Topology", "Weighting", "plan_epoch")
#: each public name and the subpackage that defines it
_EXPORTS = {
    **dict.fromkeys(_FORMAT, ".format"),
    **dict.fromkeys(_LOADING, ".loading"),
    **dict.fromkeys(_PLAN, ".plan"),
}
_SUBMODULES = ("commands", "format", "jit", "loading", "options", "plan", "storage", "tokens")

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
    if name in _EXPORTS:
        value = getattr(import_module(_EXPORTS[name], __name__), name)
        globals()[name] = value  # later lookups skip this function
        return value
    if name in _SUBMODULES:
        return import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS, *_SUBMODULES])
