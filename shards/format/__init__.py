"""The on-disk layer: shard formats, their records, the vocabulary, the sealed manifest, verification.

Nothing here imports the loader: a writer (``ingest``) and a checker (``ingest verify``) need only this
and ``storage``. The contract these implement is ``docs/FORMAT.md``.
"""

from .access import ShardAccess
from .manifest import (
    FORMAT_VERSION,
    INDEX_NAME,
    Manifest,
    ShardEntry,
    dump_manifest,
    load_manifest,
    parse_manifest,
    read_manifest,
)
from .records import METADATA_COLUMNS, CellBlock, CellRun
from .registry import FORMATS, ShardFormat, ShardReader, get_format
from .verify import Fault, verify_shard_set
from .vocab import SPECIAL_TOKENS, Vocabulary, parse_vocab, read_vocab, vocab_to_csv

__all__ = [
    "FORMATS",
    "FORMAT_VERSION",
    "INDEX_NAME",
    "METADATA_COLUMNS",
    "SPECIAL_TOKENS",
    "CellBlock",
    "CellRun",
    "Fault",
    "Manifest",
    "ShardAccess",
    "ShardEntry",
    "ShardFormat",
    "ShardReader",
    "Vocabulary",
    "dump_manifest",
    "get_format",
    "load_manifest",
    "parse_manifest",
    "parse_vocab",
    "read_manifest",
    "read_vocab",
    "verify_shard_set",
    "vocab_to_csv",
]
