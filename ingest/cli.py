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

from shards.errors import CellshardError
from shards.format.verify import verify_shard_set
from shards.options import add_flags

from .errors import IngestError
from .options import BuildOptions

__all__ = ["main", "parser"]


def _build_parser() -> ArgumentParser:
    p = ArgumentParser(description="Turn h5ad files, the CELLxGENE Census or a SOMA experiment into a shard set.")
    p.add_argument("--config", action=ActionConfigFile, help="YAML file with any of these options")
    add_flags(p, BuildOptions)
    return p


def _synth_parser() -> ArgumentParser:
    p = ArgumentParser(description="Write a synthetic Census-like corpus as h5ad.")
    p.add_argument("--config", action=ActionConfigFile, help="YAML file with any of these options")
    p.add_argument("--cells", type=int, required=True, help="cells in the corpus")
    p.add_argument("--genes", type=int, default=10_000, help="genes (var rows), with Ensembl-style ids")
    p.add_argument("--datasets", type=int, default=4, help="datasets (each with its own donors and batch effect)")
    p.add_argument("--organism", type=str, default="homo_sapiens", help="homo_sapiens or mus_musculus")
    p.add_argument("--seed", type=int, default=0, help="seeds every random draw (same seed, same files)")
    p.add_argument("--out", type=str, required=True, help="FILE.h5ad (with --files N: FILE-000.h5ad, ...)")
    p.add_argument("--files", type=int, default=1, help="split the datasets over this many files")
    p.add_argument("--cell-types", type=int, default=12, help="distinct cell types")
    p.add_argument("--layout", type=str, default="counts", help="counts (in X) or cellxgene (raw.X)")
    p.add_argument(
        "--profile",
        type=str,
        default="basic",
        help="basic (each type has private marker genes: easy) or atlas (lineage/type/state hierarchy on "
        "co-regulated gene modules, dataset and donor batch effects, ambient RNA: what pretraining must learn)",
    )
    p.add_argument("--census-out", type=str, default=None, help="also write a Census-shaped SOMA copy to this dir")
    p.add_argument("--census-version", type=str, default="2025-01-30", help="build date recorded in that copy")
    p.add_argument("--quiet", action="store_true", help="no progress output")
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
    pub = ArgumentParser(
        description="Copy a finished shard set to object storage (s3://, gs://, any fsspec URL), verified "
        "first, the manifest last (readers see no set or a whole one). Rerun to finish an interrupted copy."
    )
    pub.add_argument("path", type=str, help="the local shard set")
    pub.add_argument("url", type=str, help="where to put it, e.g. s3://bucket/shards/census-2025-01-30")
    pub.add_argument("--replace", action="store_true", help="overwrite a different set already at the URL")
    pub.add_argument(
        "--storage-options",
        type=str,
        default=None,
        help='fsspec options as JSON, e.g. \'{"client_kwargs": {"endpoint_url": "http://minio:9000"}}\' '
        "(credentials come from the usual environment; AWS_ENDPOINT_URL works too)",
    )
    sub.add_subcommand("publish", pub, help="copy a shard set to object storage, manifest last")
    return p


def _cmd_build(ns: Namespace) -> int:
    from .pipeline import build

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


def _cmd_publish(ns: Namespace) -> int:
    from .publish import publish

    try:
        options = json.loads(ns.storage_options) if ns.storage_options else None
    except json.JSONDecodeError as exc:
        raise IngestError(f"--storage-options: not JSON ({exc})") from None
    sent = publish(ns.path, ns.url, replace=ns.replace, storage_options=options)
    print(f"{ns.url}: {'already published' if sent == 0 else f'{sent} file(s) sent, manifest last'}")
    return 0


COMMANDS = {
    "build": _cmd_build,
    "verify": _cmd_verify,
    "inspect": _cmd_inspect,
    "synth": _cmd_synth,
    "publish": _cmd_publish,
}


def main(argv: list[str] | None = None) -> int:
    p = parser()
    ns = p.parse_args(argv)  # exits 2 on usage errors
    command = ns.command
    try:
        return COMMANDS[command](ns[command])
    except CellshardError as exc:
        print(f"ingest {command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"ingest {command}: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
