"""cellshard's shard stage: the on-disk formats, their manifest, and the streaming loader."""

from .collate import Collator
from .dataset import ShardedCellDataset
from .errors import ShardError
from .formats import FORMATS, ShardFormat, get_format
from .loader import CellDataLoader
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
