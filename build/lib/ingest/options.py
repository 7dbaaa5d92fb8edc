"""``BuildOptions``: every option of ``ingest build``, typed and documented in one place.

The ``ingest build`` parser is generated from it (``shards.options.add_flags``), and so is its table in
``docs/OPTIONS.md``. ``fingerprint`` says which options change the output (and so the build's identity).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field

from .errors import IngestError

__all__ = ["SPLIT_BY", "BuildOptions"]  # SPLIT_BY: the keys with a meaning beyond an obs column

SPLIT_BY = ("donor_id", "dataset_id", "cell")


_SOURCE = "source (exactly one of --input, --census-version/--census-uri, --soma-uri)"


def _source(**kw: object) -> dict:
    return {"group": _SOURCE, **kw}


@dataclass(frozen=True)
class BuildOptions:
    """What ``ingest build`` was asked to do. Each field is a flag (dashes for underscores) and a YAML key
    of ``--config``; the parser, its help and ``docs/OPTIONS.md`` are generated from these fields."""

    out: str
    """The output directory of the shard set (empty, or holding this same build, which then resumes)."""
    input: list[str] = field(default_factory=list, metadata=_source(nargs="+"))
    """h5ad paths or globs forming one corpus (read in backed mode, by row blocks)."""
    census_version: str | None = field(default=None, metadata=_source())
    """A Census release: ``stable``, ``latest`` or a date (recorded with the date it resolved to)."""
    census_uri: str | None = field(default=None, metadata=_source())
    """A local copy or mirror of a Census release (path, ``file://``, ``s3://``); with it the release
    date is checked against the copy."""
    soma_uri: str | None = field(default=None, metadata=_source())
    """Any SOMA experiment (path, ``file://`` or ``s3://``)."""
    organism: str = field(default="homo_sapiens", metadata=_source())
    """The Census experiment (``homo_sapiens``, ``mus_musculus``; ``"Homo sapiens"`` works too)."""
    measurement: str = field(default="RNA", metadata=_source())
    """The SOMA measurement."""
    x_layer: str = field(default="raw", metadata=_source())
    """The SOMA X layer of raw counts."""
    obs_filter: str | None = field(default=None, metadata=_source())
    """A SOMA value filter on obs, e.g. ``is_primary_data == True and tissue_general == 'lung'``."""
    var_filter: str | None = field(default=None, metadata=_source())
    """A SOMA value filter on var: the genes that become tokens (normalization still uses all genes)."""
    format: str = "zarr"
    """The shard format: ``zarr`` or ``webdataset``."""
    cells_per_shard: int = 10_000
    """Cells per shard (shards of a split differ by at most one cell)."""
    seed: int = 0
    """Seeds the split hash and the global shuffle."""
    workers: int = 1
    """Spawned worker processes (the output is byte-identical for any number)."""
    threads: int = 1
    """Work units run at once in threads of each process (the compiled kernels, zstd and most reading
    release the GIL): on a machine with more cores than ``--workers``, or to use 2 cores in one process.
    The output is byte-identical for any number."""
    val_fraction: float = 0.0
    """The share of split keys (``--split-by``) sent to ``val`` by a seeded hash."""
    split_by: str = "donor_id"
    """The split key: any obs column (e.g. ``donor_id``, ``dataset_id``, ``sample``) or ``cell``; a key goes
    wholly to one split. A split that would get no cell, or under half of ``--val-fraction``, is an error."""
    layer: str | None = None
    """Read counts from ``layers/NAME`` instead of X."""
    use_raw: bool = False
    """Read counts from ``raw.X`` (CELLxGENE h5ads keep them there)."""
    gene_id_column: str | None = None
    """The var column of Ensembl ids (default: ``feature_id`` if present, else ``var.index``; rows with a
    missing id are dropped and counted)."""
    allow_non_ensembl_ids: bool = False
    """Take gene ids that do not look like Ensembl stable ids (e.g. symbols) as they are; without it such
    ids are refused, since a vocabulary of symbols differs between annotation releases."""
    vocab: str | None = None
    """A ``vocab.csv`` to keep (``gene_id,token[,gene_name]``; missing special tokens are appended)."""
    gene_medians: str | None = None
    """A ``gene_medians.csv`` (``gene_id,median``) to use instead of pass 1."""
    obs_columns: list[str] | None = None
    """obs columns kept as record metadata (default: none; for the Census its ten usual columns)."""
    quiet: bool = False
    """No progress bars."""
    block_cells: int = 8_192
    """Rows read and tokenized at a time (memory per process grows with it)."""
    unit_cells: int = 65_536
    """Rows per work unit: the grain of parallelism and of resumption."""
    soma_buffer_bytes: int = field(default=256 * 1024**2, metadata=_source())
    """TileDB's read buffer per column (``soma.init_buffer_bytes``; TileDB-SOMA's default is 1 GiB)."""
    tiledb_config: list[str] = field(default_factory=list, metadata=_source())
    """TileDB settings ``KEY=VALUE``, e.g. ``vfs.s3.endpoint_override=HOST:PORT`` (credentials: use the
    environment; values are never written to the work directory or manifest)."""
    census_timeout: float = field(default=30.0, metadata=_source())
    """Seconds to wait for the Census release directory before failing."""
    dry_run: bool = False
    """Check and count the source, print the plan, write nothing."""

    def validate(self) -> None:
        from shards.format.registry import FORMATS

        if self.format not in FORMATS:
            raise IngestError(f"--format {self.format!r}: choose one of {sorted(FORMATS)}")
        if self.cells_per_shard < 1:
            raise IngestError(f"--cells-per-shard {self.cells_per_shard}: must be at least 1")
        if self.workers < 1:
            raise IngestError(f"--workers {self.workers}: must be at least 1")
        if self.threads < 1:
            raise IngestError(f"--threads {self.threads}: must be at least 1")
        if not 0.0 <= self.val_fraction < 1.0:
            raise IngestError(f"--val-fraction {self.val_fraction}: must be in [0, 1)")
        if not self.split_by.strip():
            raise IngestError("--split-by '': name an obs column (e.g. donor_id) or cell")
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

        Paths, URIs, ``workers``, ``threads``, ``quiet`` and I/O tuning are left out: they do not change the result
        (a moved Census copy or input file is the same build).
        """
        ignored = {
            "workers",
            "threads",
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
            "allow_non_ensembl_ids",
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
