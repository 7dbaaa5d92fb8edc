"""How a format's reader reaches the files of one shard, wherever the shard set lives.

The loader (``shards.loading.readers``) knows where a set is (a local directory, a URL, a local cache of
whole remote shards) and what the manifest says; a format's reader knows its files' layout. A
``ShardAccess`` is what passes between them for one shard: its manifest entry, where its files are
(``local``, or ``None`` when they are read remotely through ``fetch``), and the whole-file checks every
format shares (the sidecar against its sha256, the main file against its size, directory metadata
against ``metadata_sha256``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ShardError
from ..storage.atomic import tree_digest
from ..storage.remote import redact

__all__ = ["ShardAccess"]


@dataclass(frozen=True)
class ShardAccess:
    """One shard's files: ``shard`` is its manifest entry; ``local`` the directory holding them on local
    disk (the set itself, or the cache), or None: then ``fetch(rel, lo, hi)`` reads them remotely."""

    shard: dict[str, Any]
    root: str  # the shard set's location, credentials included (for opening, never for messages)
    local: Path | None
    fetch: Callable[[str, int | None, int | None], bytes]
    storage_options: dict[str, Any] = field(default_factory=dict)
    #: threads a format's reader may decode one read on (the caller waits for them), or None
    executor: Executor | None = None

    def location(self, rel: str) -> str:
        """Where a file of the set is read from: the local copy, else its URL (credentials included)."""
        return str(self.local / rel) if self.local is not None else f"{self.root.rstrip('/')}/{rel}"

    def where(self, rel: str, remote: bool = False) -> str:
        """The same place, for messages (credentials redacted); ``remote``: always the URL form."""
        if remote:
            return redact(f"{self.root.rstrip('/')}/{rel}")
        return redact(self.location(rel))

    def whole(self, rel: str) -> bytes:
        """A file of the shard, read whole (locally, or fetched)."""
        if self.local is None:
            return self.fetch(rel, None, None)
        try:
            return (self.local / rel).read_bytes()
        except FileNotFoundError:
            raise ShardError(
                f"{self.local / rel}: missing from the shard set (a file of {self.shard['path']}); "
                "restore it or rebuild the set"
            ) from None
        except OSError as exc:
            raise ShardError(f"{self.local / rel}: cannot read it ({exc.strerror})") from exc

    def read_range(self, rel: str, lo: int, hi: int | None) -> bytes:
        """Bytes ``lo:hi`` of a file of the shard (``lo < 0`` and ``hi`` None: its last ``-lo`` bytes),
        from local disk or as one range request."""
        if self.local is None:
            return self.fetch(rel, lo, hi)
        path = self.local / rel
        try:
            with open(path, "rb") as f:
                if lo < 0:  # as an HTTP suffix range: the whole file if it is shorter
                    f.seek(max(0, f.seek(0, 2) + lo))
                    return f.read()
                f.seek(lo)
                return f.read(hi - lo if hi is not None else -1)
        except FileNotFoundError:
            raise ShardError(
                f"{path}: missing from the shard set (a file of {self.shard['path']}); restore it or rebuild the set"
            ) from None
        except OSError as exc:
            raise ShardError(f"{path}: cannot read bytes {lo}:{hi} ({exc.strerror}); run `ingest verify`") from exc

    def sidecar(self) -> bytes:
        """The shard's sidecar (sample index or metadata table), checked against the manifest's sha256."""
        entry = self.shard["files"][0]
        data = self.whole(entry["path"])
        if len(data) != entry["bytes"] or hashlib.sha256(data).hexdigest() != entry["sha256"]:
            raise ShardError(
                f"{self.where(entry['path'])}: fails its sha256 check against the manifest (corrupt, "
                f"truncated or modified; a file of {self.shard['path']}); run `ingest verify`, rebuild the set"
            )
        return data

    def check_opened(self, metadata_files: tuple[str, ...]) -> None:
        """Checks made once when a process first reads the shard: the main file is there (a file of the
        manifest's size), and a directory shard's metadata documents match ``metadata_sha256``."""
        rel = self.shard["path"]
        if self.local is not None:
            main = self.local / rel
            if not main.exists():
                raise ShardError(f"{main}: shard is missing from the shard set; restore it or rebuild the set")
            if main.is_file() and main.stat().st_size != self.shard["bytes"]:
                raise ShardError(
                    f"{main}: {main.stat().st_size} bytes, the manifest says {self.shard['bytes']} "
                    "(truncated or modified); run `ingest verify`, rebuild the set"
                )
        if metadata_files:
            digest = tree_digest((f, hashlib.sha256(self.whole(f"{rel}/{f}")).hexdigest()) for f in metadata_files)
            if digest != self.shard.get("metadata_sha256"):
                raise ShardError(
                    f"{self.where(rel)}: its zarr.json metadata fails the manifest's metadata_sha256 "
                    "(corrupt or modified); run `ingest verify`, rebuild the set"
                )
