"""Build options and the pure arithmetic of a build: work units and the shard layout.

Everything here is a function of the options and the inputs' sizes only, never of ``--workers``: that is
what makes the output byte-identical whatever the degree of parallelism.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field

import numpy as np

from shards.formats import FORMATS

from .errors import IngestError
from .split import SPLIT_NAMES

__all__ = ["BuildOptions", "ShardLayout", "Unit", "make_units", "shard_layout"]

SPLIT_BY = ("donor_id", "dataset_id", "cell")


@dataclass(frozen=True)
class BuildOptions:
    """What ``ingest build`` was asked to do (``--flag`` ↔ field, dashes ↔ underscores)."""

    out: str
    input: list[str] = field(default_factory=list)
    census_version: str | None = None
    census_uri: str | None = None
    soma_uri: str | None = None
    organism: str = "homo_sapiens"
    measurement: str = "RNA"
    x_layer: str = "raw"
    obs_filter: str | None = None
    var_filter: str | None = None
    format: str = "zarr"
    cells_per_shard: int = 10_000
    seed: int = 0
    workers: int = 1
    val_fraction: float = 0.0
    split_by: str = "donor_id"
    layer: str | None = None
    use_raw: bool = False
    gene_id_column: str | None = None
    vocab: str | None = None
    gene_medians: str | None = None
    obs_columns: list[str] | None = None  # None: the source's default (the Census: CENSUS_DEFAULT_OBS_COLUMNS)
    quiet: bool = False
    block_cells: int = 8_192
    unit_cells: int = 65_536
    soma_buffer_bytes: int = 256 * 1024**2
    tiledb_config: list[str] = field(default_factory=list)  # "key=value" TileDB settings (S3 endpoint, region...)
    census_timeout: float = 30.0
    dry_run: bool = False

    def validate(self) -> None:
        if self.format not in FORMATS:
            raise IngestError(f"--format {self.format!r}: choose one of {sorted(FORMATS)}")
        if self.cells_per_shard < 1:
            raise IngestError(f"--cells-per-shard {self.cells_per_shard}: must be at least 1")
        if self.workers < 1:
            raise IngestError(f"--workers {self.workers}: must be at least 1")
        if not 0.0 <= self.val_fraction < 1.0:
            raise IngestError(f"--val-fraction {self.val_fraction}: must be in [0, 1)")
        if self.split_by not in SPLIT_BY:
            raise IngestError(f"--split-by {self.split_by!r}: choose one of {list(SPLIT_BY)}")
        if self.block_cells < 1 or self.unit_cells < self.block_cells:
            raise IngestError("--block-cells must be >= 1 and --unit-cells >= --block-cells")
        if self.layer and self.use_raw:
            raise IngestError("--layer and --use-raw are exclusive; choose where the counts are")
        soma_source = self.census_version is not None or self.census_uri is not None or self.soma_uri is not None
        if soma_source and (self.layer or self.use_raw):
            raise IngestError("--layer and --use-raw apply to h5ad inputs; for SOMA sources use --x-layer")
        if self.soma_uri and (self.census_version or self.census_uri):
            raise IngestError("--soma-uri and --census-version/--census-uri are exclusive; choose one source")
        if self.soma_buffer_bytes < 1024**2:
            raise IngestError(f"--soma-buffer-bytes {self.soma_buffer_bytes}: must be at least 1 MiB")
        self.tiledb_settings()  # raises on a malformed entry
        if self.census_timeout <= 0:
            raise IngestError(f"--census-timeout {self.census_timeout}: must be positive (seconds)")

    def tiledb_settings(self) -> dict[str, str]:
        """``--tiledb-config`` entries as a dict (later entries win)."""
        settings = {}
        for entry in self.tiledb_config:
            key, sep, value = entry.partition("=")
            if not sep or not key.strip():
                raise IngestError(f"--tiledb-config {entry!r}: expected KEY=VALUE, e.g. vfs.s3.region=eu-west-1")
            settings[key.strip()] = value.strip()
        return settings

    def redacted(self) -> dict:
        """The options as recorded in the work directory: TileDB settings by key only (they may hold secrets)."""
        doc = asdict(self)
        doc["tiledb_config"] = sorted(self.tiledb_settings())
        return doc

    def fingerprint(self, source: dict, obs_columns: list[str], vocab_sha: str | None, medians_sha: str | None) -> str:
        """Identity of the output: options that change it plus the source's content identity.

        Paths, URIs, ``workers``, ``quiet`` and I/O tuning are left out: they do not change the result
        (a moved Census copy or input file is the same build).
        """
        ignored = {
            "workers",
            "quiet",
            "out",
            "input",
            "vocab",
            "gene_medians",
            "census_uri",
            "soma_uri",
            "soma_buffer_bytes",
            "tiledb_config",
            "census_timeout",
            "obs_columns",
        }
        opts = {k: v for k, v in asdict(self).items() if k not in ignored}
        doc = {
            "options": opts,
            "source": source,
            "obs_columns": obs_columns,
            "vocab": vocab_sha,
            "gene_medians": medians_sha,
            "layout": 2,
        }
        return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class Unit:
    """A contiguous row range of one input file: the grain of parallelism and of resumption."""

    index: int
    file: int
    start: int
    stop: int


def make_units(n_obs: list[int], unit_cells: int) -> list[Unit]:
    units = []
    for f, n in enumerate(n_obs):
        for start in range(0, n, unit_cells):
            units.append(Unit(len(units), f, start, min(n, start + unit_cells)))
    return units


@dataclass(frozen=True)
class ShardLayout:
    """Shards of each split, in order train then val; sizes within a split differ by at most one."""

    split_cells: dict[str, int]
    bounds: dict[str, np.ndarray]  # per split: position bounds of its shards (n_shards + 1)
    first_shard: dict[str, int]
    first_cell: dict[str, int]

    @property
    def n_shards(self) -> int:
        return sum(len(b) - 1 for b in self.bounds.values())

    def shards(self) -> list[tuple[int, str, int, int]]:
        """``(shard index, split, first cell, n_cells)`` for every shard."""
        out = []
        for split in SPLIT_NAMES:
            b = self.bounds[split]
            for j in range(len(b) - 1):
                out.append(
                    (self.first_shard[split] + j, split, self.first_cell[split] + int(b[j]), int(b[j + 1] - b[j]))
                )
        return out


def shard_layout(split_cells: dict[str, int], cells_per_shard: int) -> ShardLayout:
    bounds, first_shard, first_cell = {}, {}, {}
    shard = cell = 0
    for split in SPLIT_NAMES:
        n = split_cells.get(split, 0)
        k = -(-n // cells_per_shard)
        bounds[split] = (np.arange(k + 1, dtype=np.int64) * n) // max(k, 1)
        first_shard[split], first_cell[split] = shard, cell
        shard += k
        cell += n
    return ShardLayout(dict(split_cells), bounds, first_shard, first_cell)
