"""cellshard's shard stage: the on-disk formats, their manifest, and (soon) the streaming loader."""

from .errors import ShardError
from .formats import FORMATS, ShardFormat, get_format
from .manifest import FORMAT_VERSION, INDEX_NAME, dump_manifest, load_manifest
from .records import METADATA_COLUMNS, CellBlock
from .verify import Fault, verify_shard_set
from .vocab import SPECIAL_TOKENS, Vocabulary, read_vocab, vocab_to_csv

__all__ = [
    "FORMATS",
    "FORMAT_VERSION",
    "INDEX_NAME",
    "METADATA_COLUMNS",
    "SPECIAL_TOKENS",
    "CellBlock",
    "Fault",
    "ShardError",
    "ShardFormat",
    "Vocabulary",
    "dump_manifest",
    "get_format",
    "load_manifest",
    "read_vocab",
    "verify_shard_set",
    "vocab_to_csv",
]
