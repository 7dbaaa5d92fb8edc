"""A local cache of whole remote shards, at most ``cache_bytes``, least recently used evicted first.

With ``cache_dir`` and ``cache_bytes`` a remote shard is downloaded whole on first use and its sha256
checked against the manifest (a whole-shard read is checked whole), so later reads are local reads.
"""

from __future__ import annotations

import fcntl
import os
import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol

import fsspec

from ..errors import ShardError
from .atomic import sha256_file, sha256_tree
from .remote import redact, with_retries

__all__ = ["CachedShard", "ShardCache"]


class _HashedFile(Protocol):
    path: str
    sha256: str


class CachedShard(Protocol):
    """What the cache needs of a shard (``format.manifest.ShardEntry`` is one): its main file or
    directory, a directory's members, its side files and their hashes."""

    path: str
    sha256: str
    members: Sequence[str]
    files: Sequence[_HashedFile]


class ShardCache:
    """Whole shards on local disk, at most ``max_bytes``, least recently used evicted first.

    Several DataLoader workers may share the directory: a download takes an exclusive ``flock`` on the
    shard, lands in a temporary directory and is renamed into place when its hash matches; readers hold
    a shared lock, and eviction skips shards that are being read.
    """

    def __init__(self, directory: str | Path, max_bytes: int) -> None:
        if max_bytes <= 0:
            raise ShardError(f"cache_bytes={max_bytes}: must be positive")
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes

    def _size(self, path: Path) -> int:
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())

    @contextmanager
    def use(self, key: str, shard: CachedShard, fs: fsspec.AbstractFileSystem, base: str) -> Iterator[Path]:
        """The local directory holding the shard's files, downloaded and verified if needed, and kept
        from eviction while the caller reads (a shared ``flock``; eviction takes it exclusively)."""
        target = self.dir / key
        with open(self.dir / f".{key}.lock", "a+") as lock:
            # shared from the start when the shard is there: a reader may nest uses of one shard (the
            # sample index, then the cells), and an exclusive request would wait on its own shared lock
            fcntl.flock(lock, fcntl.LOCK_SH)
            if not target.exists():
                fcntl.flock(lock, fcntl.LOCK_EX)  # converts; only the first use of a shard gets here
                if not target.exists():
                    self._download(target, shard, fs, base)
                fcntl.flock(lock, fcntl.LOCK_SH)  # downgrade: other readers welcome, evictors not
            os.utime(target)  # recency for the LRU order
            try:
                yield target
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
        self._evict(keep=target)

    def _download(self, target: Path, shard: CachedShard, fs: fsspec.AbstractFileSystem, base: str) -> None:
        tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        main = shard.path
        members = [f"{main}/{m}" for m in shard.members] or [main]
        for rel in members + [f.path for f in shard.files]:
            local = tmp / rel
            local.parent.mkdir(parents=True, exist_ok=True)
            with_retries(lambda rel=rel, local=local: fs.get_file(f"{base}/{rel}", str(local)), f"{base}/{rel}")
        got = sha256_tree(tmp / main) if shard.members else sha256_file(tmp / main)
        bad = [f.path for f in shard.files if sha256_file(tmp / f.path) != f.sha256]
        if got != shard.sha256 or bad:
            shutil.rmtree(tmp, ignore_errors=True)
            raise ShardError(
                f"{redact(base)}/{main}: downloaded shard fails its sha256 check {bad}; the remote copy is corrupt"
            )
        os.replace(tmp, target)

    def _evict(self, keep: Path) -> None:
        entries = [p for p in self.dir.iterdir() if p.is_dir() and not p.name.startswith(".")]
        sizes = {p: self._size(p) for p in entries}
        total = sum(sizes.values())
        for path in sorted(entries, key=lambda p: p.stat().st_mtime):
            if total <= self.max_bytes:
                break
            if path == keep:
                continue
            with open(self.dir / f".{path.name}.lock", "a+") as lock:
                try:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:  # another worker is reading it: leave it for now
                    continue
                shutil.rmtree(path, ignore_errors=True)
                total -= sizes[path]
