"""The loading layer: read shard sets (any format, local or remote), sample and cut their cells into
batches, collate them (truncate, specials, pad, mask) and serve them through a resumable DataLoader.

Classes that need torch (``ShardedCellDataset``, ``CellDataLoader``, ``Collator``) load on first use,
so that processes that only read shards (ingest workers, ``ingest verify``) start without torch.

Every name loads on first use (``shards.lazy``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazy import lazy_namespace

if TYPE_CHECKING:
    from .batch import CellBatch, RaggedBatch
    from .collate import Collator
    from .config import ON_ERROR, VOCAB_MODES, LoaderConfig
    from .dataset import ShardedCellDataset
    from .loader import CellDataLoader
    from .panels import PanelFile, PanelFilter, PanelSpec, read_panel
    from .readers import ShardSetReader
    from .streams import MultiReader
    from .windows import READ_GAP, RepeatCache, Window
    from .world import detect_rank, worker_info

#: each public name and the module that defines it
_EXPORTS = {
    "ON_ERROR": ".config",
    "READ_GAP": ".windows",
    "VOCAB_MODES": ".config",
    "CellBatch": ".batch",
    "CellDataLoader": ".loader",
    "Collator": ".collate",
    "LoaderConfig": ".config",
    "MultiReader": ".streams",
    "PanelFile": ".panels",
    "PanelFilter": ".panels",
    "PanelSpec": ".panels",
    "RaggedBatch": ".batch",
    "RepeatCache": ".windows",
    "ShardSetReader": ".readers",
    "ShardedCellDataset": ".dataset",
    "Window": ".windows",
    "detect_rank": ".world",
    "read_panel": ".panels",
    "worker_info": ".world",
}

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

__getattr__, __dir__ = lazy_namespace(__name__, _EXPORTS)
