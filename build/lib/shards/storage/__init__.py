"""Storage: atomic writes and content hashes, remote shard sets (fsspec, retries, a local cache), and the
named fault points of the crash tests. Nothing here knows a shard format or the loader."""

from .atomic import (
    atomic_dir,
    atomic_file,
    fsync_dir,
    fsync_tree,
    path_bytes,
    sha256_file,
    sha256_path,
    sha256_tree,
    tmp_name,
    tree_digest,
    write_bytes_atomic,
)
from .cache import ShardCache
from .faults import FAULT_ENV, fault_point
from .remote import is_remote, is_secret_key, open_filesystem, redact, redact_options, with_retries

__all__ = [
    "FAULT_ENV",
    "ShardCache",
    "atomic_dir",
    "atomic_file",
    "fault_point",
    "fsync_dir",
    "fsync_tree",
    "is_remote",
    "is_secret_key",
    "open_filesystem",
    "path_bytes",
    "redact",
    "redact_options",
    "sha256_file",
    "sha256_path",
    "sha256_tree",
    "tmp_name",
    "tree_digest",
    "with_retries",
    "write_bytes_atomic",
]
