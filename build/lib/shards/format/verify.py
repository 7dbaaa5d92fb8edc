"""Check a shard set against its manifest: every file present, of the recorded size and hash."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import ShardError
from ..storage.atomic import path_bytes, sha256_file, sha256_path, tree_digest
from .manifest import load_manifest
from .registry import get_format

__all__ = ["Fault", "verify_shard_set"]

_SHARD_INDEX = re.compile(r"shard-(\d{6})\.")


@dataclass(frozen=True)
class Fault:
    """One problem, named by the file it is in."""

    path: str
    problem: str

    def __str__(self) -> str:
        return f"{self.path}: {self.problem}"


def _check_file(root: Path, rel: str, sha256: str, size: int | None) -> list[Fault]:
    path = root / rel
    if not path.exists():
        return [Fault(rel, "missing")]
    actual = path_bytes(path)
    if size is not None and actual != size:
        return [Fault(rel, f"size {actual} bytes, manifest says {size}")]
    if sha256_path(path) != sha256:
        return [Fault(rel, "sha256 differs from the manifest (corrupt or modified)")]
    return []


def verify_shard_set(directory: Path | str) -> list[Fault]:
    """All faults found (empty when sound). A missing or invalid manifest is one fault."""
    root = Path(directory)
    try:
        manifest = load_manifest(root)
    except ShardError as exc:
        return [Fault("index.json", str(exc))]
    faults: list[Fault] = []
    for key in ("vocab", "gene_medians", "presence", "labels"):
        if key not in manifest:  # presence.parquet and labels.npz are optional
            continue
        entry = manifest[key]
        path = root / entry["file"]
        if not path.is_file():
            faults.append(Fault(entry["file"], "missing"))
        elif sha256_file(path) != entry["sha256"]:
            faults.append(Fault(entry["file"], "sha256 differs from the manifest"))
    fmt = get_format(manifest["format"])
    expected_first = 0
    total_cells = total_tokens = 0
    for shard in manifest["shards"]:
        rel = shard["path"]
        shard_faults = _check_file(root, rel, shard["sha256"], shard["bytes"])
        for f in shard["files"]:
            shard_faults += _check_file(root, f["path"], f["sha256"], f["bytes"])
        if shard["first_cell"] != expected_first:
            shard_faults.append(Fault(rel, f"first_cell {shard['first_cell']}, expected {expected_first}"))
        if not shard_faults and fmt.metadata_files:  # what readers check on open must hold too
            digest = tree_digest((f, sha256_file(root / rel / f)) for f in fmt.metadata_files)
            if digest != shard.get("metadata_sha256"):
                shard_faults.append(Fault(rel, "metadata_sha256 differs from its zarr.json files"))
        if not shard_faults:
            match = _SHARD_INDEX.match(rel)
            try:
                n = fmt.count_cells(root, int(match.group(1))) if match else -1
            except ShardError as exc:
                shard_faults.append(Fault(rel, str(exc)))
            else:
                if n != shard["n_cells"]:
                    shard_faults.append(Fault(rel, f"holds {n} cells, manifest says {shard['n_cells']}"))
        faults += shard_faults
        expected_first += shard["n_cells"]
        total_cells += shard["n_cells"]
        total_tokens += shard["n_tokens"]
    if total_cells != manifest["n_cells"]:
        faults.append(Fault("index.json", f"shards sum to {total_cells} cells, n_cells is {manifest['n_cells']}"))
    if total_tokens != manifest["n_tokens"]:
        faults.append(Fault("index.json", f"shards sum to {total_tokens} tokens, n_tokens is {manifest['n_tokens']}"))
    return faults
