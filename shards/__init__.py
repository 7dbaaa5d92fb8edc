"""cellshard's shard stage: the on-disk formats, their manifest, and the streaming loader.

The loader's classes import torch; they are loaded on first use so that the ingest CLI and its worker
processes, which only write and check shards, start without it (about 1.2 s per process here).
"""

from importlib import import_module

from .errors import ShardError
from .formats import FORMATS, ShardFormat, get_format
from .manifest import FORMAT_VERSION, INDEX_NAME, dump_manifest, load_manifest
from .records import METADATA_COLUMNS, CellBlock
from .sampler import DistributedShardSampler, plan_epoch
from .topology import Topology, detect_rank
from .verify import Fault, verify_shard_set
from .vocab import SPECIAL_TOKENS, Vocabulary, read_vocab, vocab_to_csv

__all__ = [
    "FORMATS",
    "FORMAT_VERSION",
    "INDEX_NAME",
    "METADATA_COLUMNS",
    "SPECIAL_TOKENS",
    "CellBlock",
    "CellDataLoader",
    "Collator",
    "DistributedShardSampler",
    "Fault",
    "ShardError",
    "ShardFormat",
    "ShardedCellDataset",
    "Topology",
    "Vocabulary",
    "detect_rank",
    "dump_manifest",
    "get_format",
    "load_manifest",
    "plan_epoch",
    "read_vocab",
    "verify_shard_set",
    "vocab_to_csv",
]

_LAZY = {"Collator": ".collate", "ShardedCellDataset": ".dataset", "CellDataLoader": ".loader"}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
