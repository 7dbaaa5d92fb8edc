"""``index.json``: the manifest and commit point of a shard set.

It is written last and atomically, so a directory without it is not a shard set, whatever else it holds.
Its JSON Schema ships with the package (``index.schema.json``) and every reader validates against it.
It carries its own ``checksum`` (sha256 of its canonical JSON without ``checksum`` and ``created_at``),
so an edited or damaged manifest is refused by every reader instead of being trusted: the shard
hashes it lists are what the rest of the set is checked against. ``created_at`` is left out because it
is the one field allowed to differ between identical builds.
"""

from __future__ import annotations

import hashlib
import json
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema

from ..errors import ShardError
from ..storage.atomic import write_bytes_atomic
from .document import (
    Counters,
    FileEntry,
    LabelsEntry,
    Manifest,
    PresenceEntry,
    ShardEntry,
    ShardFile,
    SplitCounts,
    Stats,
    VocabEntry,
)

__all__ = [
    "FORMAT_VERSION",
    "INDEX_NAME",
    "Counters",
    "FileEntry",
    "LabelsEntry",
    "Manifest",
    "PresenceEntry",
    "ShardEntry",
    "ShardFile",
    "SplitCounts",
    "Stats",
    "VocabEntry",
    "dump_manifest",
    "load_manifest",
    "manifest_build_id",
    "manifest_checksum",
    "parse_manifest",
    "read_manifest",
    "schema",
    "validate_manifest",
]

FORMAT_VERSION = 2  # 2: manifest checksum, Zarr metadata hashes
INDEX_NAME = "index.json"


@cache
def schema() -> dict[str, Any]:
    return json.loads(resources.files(__package__).joinpath("index.schema.json").read_text())


def validate_manifest(manifest: dict[str, Any], where: str = INDEX_NAME) -> None:
    errors = sorted(jsonschema.Draft202012Validator(schema()).iter_errors(manifest), key=str)
    if errors:
        first = errors[0]
        loc = "/".join(str(p) for p in first.absolute_path) or "(top level)"
        raise ShardError(f"{where}: invalid manifest at {loc}: {first.message}")


def manifest_checksum(manifest: dict[str, Any]) -> str:
    """sha256 of the manifest's canonical JSON (sorted keys, no spaces), ``checksum`` and ``created_at`` left out."""
    body = {k: v for k, v in manifest.items() if k not in ("checksum", "created_at")}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()


def dump_manifest(directory: Path, manifest: dict[str, Any]) -> Path:
    """Seal (``checksum``), validate and write ``index.json`` atomically (the build's commit point)."""
    manifest["checksum"] = manifest_checksum(manifest)
    validate_manifest(manifest)
    path = Path(directory) / INDEX_NAME
    write_bytes_atomic(path, (json.dumps(manifest, indent=1, sort_keys=True) + "\n").encode())
    return path


def load_manifest(directory: Path | str) -> dict[str, Any]:
    path = Path(directory) / INDEX_NAME
    if not Path(directory).exists() and "://" not in str(directory):
        raise ShardError(f"{directory}: no such directory; {directory} is not a finished shard set (check the path)")
    if not path.is_file():
        raise ShardError(f"{path}: no manifest; {directory} is not a finished shard set (build it with `ingest build`)")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ShardError(f"{path}: unreadable manifest ({exc})") from exc
    return parse_manifest(text, str(path))


def parse_manifest(text: str, path: str) -> dict[str, Any]:
    """Parse and validate the text of an ``index.json`` (``path`` names it in errors)."""
    try:
        manifest = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ShardError(f"{path}: unreadable manifest ({exc})") from exc
    if isinstance(manifest, dict) and manifest.get("format_version") not in (None, FORMAT_VERSION):
        raise ShardError(
            f"{path}: format_version {manifest.get('format_version')} is not supported by this cellshard "
            f"(reads version {FORMAT_VERSION}); upgrade cellshard or rebuild the shard set"
        )
    validate_manifest(manifest, str(path))
    if manifest["checksum"] != manifest_checksum(manifest):
        raise ShardError(
            f"{path}: the manifest does not match its checksum: it was edited or damaged after the build; "
            "rebuild the shard set (or restore index.json from a copy)"
        )
    return manifest


def read_manifest(directory: Path | str) -> Manifest:
    """A local shard set's manifest, validated, checksum-checked and typed."""
    return Manifest.from_dict(load_manifest(directory))


def manifest_build_id(text: str | bytes) -> str | None:
    """The build id an ``index.json`` text names, or None, without validating it: for a set elsewhere
    that may be foreign, older or damaged (``ingest publish`` asks what a URL holds before replacing it)."""
    try:
        doc = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return doc.get("build_id") if isinstance(doc, dict) else None
