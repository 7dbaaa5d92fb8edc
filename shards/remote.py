"""Shard sets behind a URL (``http(s)://``, ``s3://``, any fsspec protocol): retries and an LRU cache.

Without a cache, ranges are read remotely: WebDataset through the sample index (one HTTP Range request
per run of cells), Zarr through zarr's fsspec store (range requests into its shard files). With
``cache_dir`` and ``cache_bytes``, a shard is downloaded whole on first use, its sha256 checked against
the manifest (a whole-shard read is checked whole), and the least recently used shards are evicted
when the cache would exceed its size limit. Transient errors are retried with exponential back-off;
credentials in URLs are never logged.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import fsspec

from .atomic import sha256_file, sha256_tree
from .errors import ShardError

__all__ = ["ShardCache", "is_remote", "open_filesystem", "redact", "redact_options", "with_retries"]

log = logging.getLogger(__name__)
T = TypeVar("T")
_CREDENTIALS = re.compile(r"(?<=://)[^/@]+@")
_SECRET_KEYS = re.compile(r"secret|password|passwd|token|key|auth|credential|session|signature", re.IGNORECASE)


def is_remote(root: str | Path) -> bool:
    text = str(root)
    return "://" in text and not text.startswith("file://")


def redact(url: str) -> str:
    """The URL without ``user:password@``, for messages and logs."""
    return _CREDENTIALS.sub("***@", str(url))


def redact_options(value: Any) -> Any:
    """fsspec storage options (or any nested config) with secrets replaced by ``***``: values under
    keys that name a secret (``key``, ``secret``, ``token``, ``Authorization``, ...), and credentials in
    URLs. For what is written to disk or logged; the run itself keeps the real values."""
    if isinstance(value, dict):
        return {k: "***" if _SECRET_KEYS.search(str(k)) and v not in (None, "") else redact_options(v)
                for k, v in value.items()}  # fmt: skip
    if isinstance(value, list | tuple):
        return type(value)(redact_options(v) for v in value)
    return redact(value) if isinstance(value, str) else value


def open_filesystem(url: str, **storage_options: Any) -> tuple[fsspec.AbstractFileSystem, str]:
    try:
        return fsspec.core.url_to_fs(url, **storage_options)
    except (ImportError, ValueError) as exc:
        raise ShardError(f"{redact(url)}: no filesystem for this URL ({exc}); install the fsspec extra") from exc


def with_retries(fn: Callable[[], T], what: str, attempts: int = 4, backoff: float = 0.25) -> T:
    """Call ``fn``; on a transport error retry with back-off 0.25, 0.5, 1 s; then raise a ShardError."""
    for attempt in range(attempts):
        try:
            return fn()
        except (FileNotFoundError, PermissionError) as exc:  # retrying cannot help
            raise ShardError(f"{redact(what)}: {type(exc).__name__} ({redact(str(exc))})") from exc
        except ShardError:
            raise
        except Exception as exc:  # transport errors differ by protocol (aiohttp, botocore, OSError)
            if attempt == attempts - 1:
                raise ShardError(f"{redact(what)}: failed after {attempts} attempts ({redact(str(exc))})") from exc
            log.warning("retrying %s after %s", redact(what), type(exc).__name__)
            time.sleep(backoff * 2**attempt)
    raise AssertionError("unreachable")


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
    def use(self, key: str, shard: dict, fs: fsspec.AbstractFileSystem, base: str) -> Iterator[Path]:
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

    def _download(self, target: Path, shard: dict, fs: fsspec.AbstractFileSystem, base: str) -> None:
        tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        main = shard["path"]
        members = [f"{main}/{m}" for m in shard.get("members", [])] or [main]
        for rel in members + [f["path"] for f in shard["files"]]:
            local = tmp / rel
            local.parent.mkdir(parents=True, exist_ok=True)
            with_retries(lambda rel=rel, local=local: fs.get_file(f"{base}/{rel}", str(local)), f"{base}/{rel}")
        got = sha256_tree(tmp / main) if shard.get("members") else sha256_file(tmp / main)
        bad = [f["path"] for f in shard["files"] if sha256_file(tmp / f["path"]) != f["sha256"]]
        if got != shard["sha256"] or bad:
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
