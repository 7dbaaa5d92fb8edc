"""The on-disk layer: shard formats, their records, the vocabulary, the sealed manifest, verification.

Nothing here imports the loader: a writer (``ingest``) and a checker (``ingest verify``) need only this
and ``storage``. The contract these implement is ``docs/FORMAT.md``.

Every name loads on first use (``shards.lazy``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazy import lazy_namespace

if TYPE_CHECKING:
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

#: each public name and the module that defines it
_EXPORTS = {
    "FORMATS": ".registry",
    "FORMAT_VERSION": ".manifest",
    "INDEX_NAME": ".manifest",
    "METADATA_COLUMNS": ".records",
    "SPECIAL_TOKENS": ".vocab",
    "CellBlock": ".records",
    "CellRun": ".records",
    "Fault": ".verify",
    "Manifest": ".manifest",
    "ShardAccess": ".access",
    "ShardEntry": ".manifest",
    "ShardFormat": ".registry",
    "ShardReader": ".registry",
    "Vocabulary": ".vocab",
    "dump_manifest": ".manifest",
    "get_format": ".registry",
    "load_manifest": ".manifest",
    "parse_manifest": ".manifest",
    "parse_vocab": ".vocab",
    "read_manifest": ".manifest",
    "read_vocab": ".vocab",
    "verify_shard_set": ".verify",
    "vocab_to_csv": ".vocab",
}

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

__getattr__, __dir__ = lazy_namespace(__name__, _EXPORTS)
