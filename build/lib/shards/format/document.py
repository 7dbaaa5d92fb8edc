"""The manifest document, typed: what every reader outside ``shards/format`` uses instead of raw keys.

``Manifest.from_dict`` takes a document that ``manifest.parse_manifest`` validated against the schema and
checked against its checksum; ``manifest.read_manifest`` does both for a local set. The nested documents
whose keys depend on the source or the build (``source``, ``options``, ``tokenizer``) stay mappings,
documented in docs/FORMAT.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import ShardError

__all__ = [
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
]


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
