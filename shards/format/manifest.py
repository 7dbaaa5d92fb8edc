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
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema

from ..errors import ShardError
from ..storage.atomic import write_bytes_atomic

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


# -- the manifest, typed: what every reader outside ``format/`` uses ---------------------------------------
@dataclass(frozen=True)
class ShardFile:
    """A file beside a shard that no checksum of its format covers (hashed into the manifest)."""

    path: str
    sha256: str
    bytes: int


@dataclass(frozen=True)
class ShardEntry:
    """One shard of the set, as the manifest lists it."""

    path: str  # shard-NNNNNN.tar | shard-NNNNNN.zarr, relative to the set
    split: str  # train | val
    n_cells: int
    n_tokens: int
    first_cell: int  # its first cell's position in the set
    sha256: str  # of its main file (a directory shard: of its hashed tree)
    bytes: int
    files: tuple[ShardFile, ...]
    members: tuple[str, ...] = ()  # a directory shard's files
    metadata_sha256: str | None = None  # Zarr: its zarr.json documents' hash
    raw: dict[str, Any] = field(default=None, repr=False, compare=False)  # type: ignore[assignment]
    """The entry as stored: what the format's own reader (``format/``) takes."""

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ShardEntry:
        return cls(
            path=d["path"],
            split=d["split"],
            n_cells=int(d["n_cells"]),
            n_tokens=int(d["n_tokens"]),
            first_cell=int(d["first_cell"]),
            sha256=d["sha256"],
            bytes=int(d["bytes"]),
            files=tuple(ShardFile(f["path"], f["sha256"], int(f["bytes"])) for f in d["files"]),
            members=tuple(d.get("members", ())),
            metadata_sha256=d.get("metadata_sha256"),
            raw=d,
        )


@dataclass(frozen=True)
class FileEntry:
    """A sidecar of the set (``vocab.csv``, ``gene_medians.csv``, ``presence.parquet``) and its sha256."""

    file: str
    sha256: str


@dataclass(frozen=True)
class VocabEntry(FileEntry):
    size: int | None = None
    special_tokens: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class LabelsEntry(FileEntry):
    """``labels.npz``: per-shard counts of these categorical columns."""

    columns: tuple[str, ...] = ()


@dataclass(frozen=True)
class PresenceEntry(FileEntry):
    """``presence.parquet``: which genes each source dataset measured (Census, SOMA)."""

    n_pairs: int = 0
    n_datasets: int = 0
    source: str = ""


@dataclass(frozen=True)
class Counters:
    """What the build left out, by reason (``missing_id``, ``no_counts``, ...)."""

    skipped_cells: dict[str, int] = field(default_factory=dict)
    dropped_genes: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Stats:
    """Cells per source dataset, and the histogram of genes per cell (``edges``, ``counts``)."""

    datasets: dict[str, int] = field(default_factory=dict)
    genes_per_cell_hist: dict[str, list[int]] = field(default_factory=dict)


@dataclass(frozen=True)
class SplitCounts:
    n_cells: int
    n_tokens: int
    n_shards: int


@dataclass(frozen=True)
class Manifest:
    """A shard set's ``index.json``, validated and parsed once (``read_manifest``). The nested documents
    whose keys depend on the source or the build (``source``, ``options``,
    ``tokenizer``) stay mappings, documented in docs/FORMAT.md."""

    format: str
    build_id: str
    n_cells: int
    n_tokens: int
    seed: int
    shards: tuple[ShardEntry, ...]
    splits: dict[str, SplitCounts]
    vocab: VocabEntry
    gene_medians: FileEntry
    tokenizer: dict[str, Any]
    source: dict[str, Any]
    counters: Counters
    created_by: dict[str, str]
    checksum: str
    labels: LabelsEntry | None = None
    presence: PresenceEntry | None = None
    options: dict[str, Any] = field(default_factory=dict)
    stats: Stats = field(default_factory=Stats)
    created_at: str | None = None
    raw: dict[str, Any] = field(default=None, repr=False, compare=False)  # type: ignore[assignment]
    """The document as stored (for writers and for tools that print it)."""

    @classmethod
    def from_dict(cls, m: dict[str, Any]) -> Manifest:
        """From a validated manifest document (``parse_manifest``, ``load_manifest``)."""
        v, gm, lab, pres = m["vocab"], m["gene_medians"], m.get("labels"), m.get("presence")
        return cls(
            format=m["format"],
            build_id=m["build_id"],
            n_cells=int(m["n_cells"]),
            n_tokens=int(m["n_tokens"]),
            seed=int(m["seed"]),
            shards=tuple(ShardEntry.from_dict(s) for s in m["shards"]),
            splits={
                k: SplitCounts(int(c["n_cells"]), int(c["n_tokens"]), int(c["n_shards"]))
                for k, c in m["splits"].items()
            },
            vocab=VocabEntry(v["file"], v["sha256"], v.get("size"), dict(v.get("special_tokens", {}))),
            gene_medians=FileEntry(gm["file"], gm["sha256"]),
            tokenizer=m["tokenizer"],
            source=m["source"],
            counters=Counters(dict(m["counters"]["skipped_cells"]), dict(m["counters"]["dropped_genes"])),
            created_by=m["created_by"],
            checksum=m["checksum"],
            labels=LabelsEntry(lab["file"], lab["sha256"], tuple(lab["columns"])) if lab else None,
            presence=PresenceEntry(
                pres["file"],
                pres["sha256"],
                int(pres.get("n_pairs", 0)),
                int(pres.get("n_datasets", 0)),
                pres.get("source", ""),
            )
            if pres
            else None,
            options=m.get("options") or {},
            stats=Stats(
                **{k: v for k, v in (m.get("stats") or {}).items() if k in ("datasets", "genes_per_cell_hist")}
            ),
            created_at=m.get("created_at"),
            raw=m,
        )

    def split(self, name: str) -> tuple[ShardEntry, ...]:
        """The shards of split ``name``, in the set's order."""
        return tuple(s for s in self.shards if s.split == name)

    @property
    def split_names(self) -> list[str]:
        return sorted({s.split for s in self.shards})

    @property
    def obs_columns(self) -> list[str]:
        """The metadata columns the build kept beyond the standard ones (``ingest build --obs-columns``)."""
        return list(self.source.get("obs_columns", []))

    @property
    def source_kind(self) -> str:
        """What the set was built from: ``h5ad``, ``census`` or ``soma`` (``ingest.sources.registry``)."""
        return self.source["kind"]

    @property
    def split_by(self) -> str | None:
        """The obs column the train/val split was drawn by (None: by cell)."""
        return self.options.get("split_by")

    @property
    def val_fraction(self) -> float:
        return float(self.options.get("val_fraction") or 0.0)

    @property
    def genes(self) -> int | None:
        """Genes in the vocabulary (its special tokens left out)."""
        return None if self.vocab.size is None else self.vocab.size - len(self.vocab.special_tokens)

    def file(self, key: str) -> FileEntry:
        """The sidecar entry ``key`` names: ``vocab``, ``gene_medians``, ``labels`` or ``presence``."""
        entry = {
            "vocab": self.vocab,
            "gene_medians": self.gene_medians,
            "labels": self.labels,
            "presence": self.presence,
        }
        if key not in entry or entry[key] is None:
            raise ShardError(f"the manifest of build {self.build_id} has no {key} file")
        return entry[key]


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
