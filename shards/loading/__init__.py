"""The loading layer: read shard sets (any format, local or remote), sample and cut their cells into
batches, collate them (truncate, specials, pad, mask) and serve them through a resumable DataLoader.

Classes that need torch (``ShardedCellDataset``, ``CellDataLoader``, ``Collator``) load on first use,
so that processes that only read shards (ingest workers, ``ingest verify``) start without torch.
"""

from importlib import import_module

from .batch import CellBatch, RaggedBatch
from .config import ON_ERROR, LoaderConfig
from .panels import PanelFile, PanelFilter, PanelSpec, read_panel
from .readers import ShardSetReader
from .streams import VOCAB_MODES, MultiReader
from .windows import READ_GAP, RepeatCache, Window
from .world import detect_rank, worker_info

__all__ = [
    "ON_ERROR",
    "READ_GAP",
    "VOCAB_MODES",
    "CellBatch",
    "CellDataLoader",
    "Collator",
    "LoaderConfig",
    "MultiReader",
    "PanelFile",
    "PanelFilter",
    "PanelSpec",
    "RaggedBatch",
    "RepeatCache",
    "ShardSetReader",
    "ShardedCellDataset",
    "Window",
    "detect_rank",
    "read_panel",
    "worker_info",
]

_LAZY = {"Collator": ".collate", "ShardedCellDataset": ".dataset", "CellDataLoader": ".loader"}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
