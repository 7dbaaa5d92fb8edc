"""``ingest publish SET URL``: copy a finished shard set to object storage (or any fsspec URL), manifest last.

The manifest is the commit point on the remote side too: every shard and sidecar is uploaded first, and
``index.json`` only once they all are, so a reader (or a training job started early) sees either no set
or a whole one. The local set is verified against its manifest before anything is sent, and a
destination that already holds another build is refused unless ``--replace``: publishing over a set
that running jobs read would change their data under them. Uploads are per file with retries; an
interrupted publish is rerun with the same command (files already there with the right size are kept).
"""

from __future__ import annotations

import posixpath
from pathlib import Path
from typing import Any

from shards.format.manifest import INDEX_NAME, manifest_build_id, read_manifest
from shards.format.verify import verify_shard_set
from shards.storage.remote import open_filesystem, redact, with_retries

from .errors import IngestError

__all__ = ["publish"]

MANIFEST = INDEX_NAME


def publish(
    local: str | Path, url: str, *, replace: bool = False, storage_options: dict[str, Any] | None = None
) -> int:
    """Upload the set at ``local`` to ``url``; the number of files sent (0: already published)."""
    root = Path(local)
    if not (root / MANIFEST).is_file():
        raise IngestError(f"{local}: not a finished shard set (no {MANIFEST}); build it with `ingest build`")
    faults = verify_shard_set(root)
    if faults:
        raise IngestError(f"{local}: {len(faults)} fault(s), first {faults[0]}; run `ingest verify {local}`")
    build_id = read_manifest(root).build_id
    fs, base = open_filesystem(url, **(storage_options or {}))
    base = base.rstrip("/")
    there = f"{base}/{MANIFEST}"
    if fs.exists(there):
        other = manifest_build_id(with_retries(lambda: fs.cat_file(there), f"reading {redact(url)}/{MANIFEST}"))
        if other == build_id:
            return 0
        if not replace:
            raise IngestError(
                f"{redact(url)}: holds another shard set (build {other}); publish to a new "
                "URL, or --replace (jobs reading it would see their data change)"
            )
        with_retries(lambda: fs.rm_file(there), f"removing {redact(url)}/{MANIFEST}")  # uncommit it first
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.name != MANIFEST)
    sent, made = 0, set()
    for path in files:
        rel = path.relative_to(root).as_posix()
        target = f"{base}/{rel}"
        parent = posixpath.dirname(target)
        if parent not in made:  # object stores need none; local and mounted filesystems do
            fs.makedirs(parent, exist_ok=True)
            made.add(parent)
        size = path.stat().st_size
        try:
            if fs.exists(target) and fs.size(target) == size and not replace:
                continue
        except FileNotFoundError:
            pass
        with_retries(lambda p=path, t=target: fs.put_file(str(p), t), f"uploading {rel} to {redact(url)}")
        sent += 1
    with_retries(lambda: fs.put_file(str(root / MANIFEST), there), f"uploading {MANIFEST} to {redact(url)}")
    return sent + 1
