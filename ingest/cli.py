"""The ``ingest`` command: ``build``, ``verify``, ``inspect`` and ``synth``.

Parsing is jsonargparse's: every flag also has a YAML key (``--config FILE.yaml``; dashes or
underscores), and the command line overrides the file. User errors (``IngestError``/``ShardError``)
print one line without a traceback and exit 1; usage errors exit 2.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from jsonargparse import ActionConfigFile, ArgumentParser, Namespace

from shards.errors import ShardError
from shards.verify import verify_shard_set

from .errors import IngestError

__all__ = ["main", "parser"]


def _build_parser() -> ArgumentParser:
    p = ArgumentParser(description="Turn h5ad files, the CELLxGENE Census or a SOMA experiment into a shard set.")
    p.add_argument("--config", action=ActionConfigFile, help="YAML file with any of these options")
    src = p.add_argument_group("source (exactly one of --input, --census-version/--census-uri, --soma-uri)")
    src.add_argument("--input", type=str, nargs="+", default=[], help="h5ad paths or globs (one corpus)")
    src.add_argument("--census-version", type=str, default=None, help="Census release: stable, latest or a date")
    src.add_argument("--census-uri", type=str, default=None, help="local copy or mirror of a Census release")
    src.add_argument("--soma-uri", type=str, default=None, help="any SOMA experiment (path, file:// or s3://)")
    src.add_argument("--organism", type=str, default="homo_sapiens", help="Census experiment (or 'Homo sapiens')")
    src.add_argument("--measurement", type=str, default="RNA", help="SOMA measurement")
    src.add_argument("--x-layer", type=str, default="raw", help="SOMA X layer of raw counts")
    src.add_argument("--obs-filter", type=str, default=None, help="SOMA value filter on obs")
    src.add_argument("--var-filter", type=str, default=None, help="SOMA value filter on var (genes kept)")
    src.add_argument("--soma-buffer-bytes", type=int, default=256 * 1024**2, help="TileDB read buffer per column")
    src.add_argument(
        "--tiledb-config",
        type=str,
        nargs="*",
        default=[],
        help="TileDB settings KEY=VALUE, e.g. vfs.s3.endpoint_override=HOST:PORT (credentials: use the environment)",
    )
    src.add_argument("--census-timeout", type=float, default=30.0, help="seconds to wait for the release directory")
    p.add_argument("--out", type=str, required=True, help="output directory of the shard set")
    p.add_argument("--format", type=str, default="zarr", help="webdataset or zarr")
    p.add_argument("--cells-per-shard", type=int, default=10_000, help="cells per shard (sizes are balanced)")
    p.add_argument("--seed", type=int, default=0, help="seed of the split and the global shuffle")
    p.add_argument("--workers", type=int, default=1, help="worker processes (the output does not depend on it)")
    p.add_argument("--val-fraction", type=float, default=0.0, help="share of split keys sent to 'val'")
    p.add_argument("--split-by", type=str, default="donor_id", help="donor_id, dataset_id or cell")
    p.add_argument("--layer", type=str, default=None, help="read counts from layers/NAME instead of X")
    p.add_argument("--use-raw", action="store_true", help="read counts from raw.X (CELLxGENE h5ads)")
    p.add_argument("--gene-id-column", type=str, default=None, help="var column of Ensembl ids")
    p.add_argument("--vocab", type=str, default=None, help="vocab.csv to keep (gene_id,token[,gene_name])")
    p.add_argument("--gene-medians", type=str, default=None, help="gene_medians.csv to use instead of pass 1")
    p.add_argument(
        "--obs-columns", type=str, nargs="*", default=None, help="obs columns kept as metadata (Census: ten defaults)"
    )
    p.add_argument("--block-cells", type=int, default=8_192, help="rows read and tokenized at a time")
    p.add_argument("--unit-cells", type=int, default=65_536, help="rows per work unit (parallelism, resume)")
    p.add_argument("--dry-run", action="store_true", help="check and count the source, print the plan, write nothing")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    return p


def _synth_parser() -> ArgumentParser:
    p = ArgumentParser(description="Write a synthetic Census-like corpus as h5ad.")
    p.add_argument("--config", action=ActionConfigFile)
    p.add_argument("--cells", type=int, required=True)
    p.add_argument("--genes", type=int, default=10_000)
    p.add_argument("--datasets", type=int, default=4)
    p.add_argument("--organism", type=str, default="homo_sapiens", help="homo_sapiens or mus_musculus")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=str, required=True, help="FILE.h5ad (with --files N: FILE-000.h5ad, ...)")
    p.add_argument("--files", type=int, default=1, help="split the datasets over this many files")
    p.add_argument("--cell-types", type=int, default=12)
    p.add_argument("--layout", type=str, default="counts", help="counts (in X) or cellxgene (raw.X)")
    p.add_argument("--census-out", type=str, default=None, help="also write a Census-shaped SOMA copy to this dir")
    p.add_argument("--census-version", type=str, default="2025-01-30", help="build date recorded in that copy")
    p.add_argument("--quiet", action="store_true")
    return p


def parser() -> ArgumentParser:
    p = ArgumentParser(prog="ingest", description="cellshard ingest: build, check and describe shard sets.")
    sub = p.add_subcommands(dest="command")
    sub.add_subcommand("build", _build_parser(), help="h5ad files, the Census or a SOMA experiment -> shard set")
    verify = ArgumentParser(description="Check every file of a shard set against its manifest.")
    verify.add_argument("path", type=str)
    sub.add_subcommand("verify", verify, help="check a shard set (exit 1 on any fault)")
    inspect = ArgumentParser(description="Summarize a shard set.")
    inspect.add_argument("path", type=str)
    inspect.add_argument("--json", action="store_true", help="machine-readable output")
    sub.add_subcommand("inspect", inspect, help="summarize a shard set")
    sub.add_subcommand("synth", _synth_parser(), help="write a synthetic corpus")
    return p


def _cmd_build(ns: Namespace) -> int:
    from .build import build
    from .plan import BuildOptions

    fields = BuildOptions.__dataclass_fields__
    result = build(BuildOptions(**{k: v for k, v in vars(ns).items() if k in fields}))
    if ns.dry_run:
        print(json.dumps({k: v for k, v in result.items() if k != "dry_run"}, indent=1, default=str))
    return 0


def _cmd_verify(ns: Namespace) -> int:
    if not Path(ns.path).is_dir():
        print(f"ingest verify: {ns.path}: no such directory", file=sys.stderr)
        return 2
    faults = verify_shard_set(ns.path)
    for fault in faults:
        print(f"FAULT {fault}")
    if faults:
        print(f"{ns.path}: {len(faults)} fault(s)", file=sys.stderr)
        return 1
    print(f"{ns.path}: OK")
    return 0


def _cmd_inspect(ns: Namespace) -> int:
    from .inspect import render, summary

    s = summary(ns.path)
    print(json.dumps(s, indent=1) if ns.json else render(s))
    return 0


def _cmd_synth(ns: Namespace) -> int:
    import time

    from .synth import SynthSpec, synthesize

    fields = SynthSpec.__dataclass_fields__
    t0 = time.perf_counter()
    written = synthesize(SynthSpec(**{k: v for k, v in vars(ns).items() if k in fields}), Path(ns.out))
    if not ns.quiet:
        n = sum(c for _, c in written)
        print(f"wrote {n:,} cells to {len(written)} file(s) in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
        for path, count in written:
            print(f"  {path}  {count:,} cells", file=sys.stderr)
    if ns.census_out:
        from .census_copy import write_census_copy

        if ns.layout != "counts":
            raise IngestError("--census-out needs --layout counts (the copy's X layer 'raw' holds counts)")
        t0 = time.perf_counter()
        copy = write_census_copy(
            [p for p, _ in written], ns.census_out, version=ns.census_version, organism=ns.organism
        )
        if not ns.quiet:
            print(
                f"wrote a Census-shaped copy ({copy.organism}, {copy.n_obs:,} cells, {copy.n_datasets} datasets, "
                f"release {ns.census_version}) to {copy.root} in {time.perf_counter() - t0:.1f} s",
                file=sys.stderr,
            )
    return 0


COMMANDS = {"build": _cmd_build, "verify": _cmd_verify, "inspect": _cmd_inspect, "synth": _cmd_synth}


def main(argv: list[str] | None = None) -> int:
    p = parser()
    ns = p.parse_args(argv)  # exits 2 on usage errors
    command = ns.command
    try:
        return COMMANDS[command](ns[command])
    except (IngestError, ShardError) as exc:
        print(f"ingest {command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"ingest {command}: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
