"""The ``ingest`` command: ``build``, ``verify``, ``inspect``, ``synth`` and ``publish``.

Each command is a typed function below, registered in ``COMMANDS``; ``shards.commands`` makes the
command line from the signatures and docstrings (``build`` and ``synth`` take their options dataclass,
``BuildOptions`` / ``SynthSpec``, one flag per field). Every flag also has a YAML key (``--config
FILE.yaml``; dashes or underscores), and the command line overrides the file. User errors
(``IngestError``/``ShardError``) print one line without a traceback and exit 1; usage errors exit 2.
"""

from __future__ import annotations

import json as jsonlib
import sys
import time
from pathlib import Path
from typing import Any

from shards.commands import run

from .errors import IngestError
from .options import BuildOptions
from .synth_spec import SynthSpec

__all__ = ["COMMANDS", "main", "parser"]

DESCRIPTION = "cellshard ingest: build, check and describe shard sets."


def build(options: BuildOptions) -> int:
    """Turn h5ad files, the CELLxGENE Census or a SOMA experiment into a shard set."""
    from .pipeline import build as run_build

    result = run_build(options)
    if options.dry_run:
        print(jsonlib.dumps({k: v for k, v in result.items() if k != "dry_run"}, indent=1, default=str))
    return 0


def verify(path: str) -> int:
    """Check every file of a shard set against its manifest (exit 1 on any fault).

    Args:
        path: the shard set's directory.
    """
    from shards.format.verify import verify_shard_set

    if not Path(path).is_dir():
        print(f"ingest verify: {path}: no such directory", file=sys.stderr)
        return 2
    faults = verify_shard_set(path)
    for fault in faults:
        print(f"FAULT {fault}")
    if faults:
        print(f"{path}: {len(faults)} fault(s)", file=sys.stderr)
        return 1
    print(f"{path}: OK")
    return 0


def inspect(path: str, *, json: bool = False) -> int:
    """Summarize a shard set from its manifest (no shard is read).

    Args:
        path: the shard set's directory.
        json: machine-readable output.
    """
    from .inspect import render, summary

    s = summary(path)
    print(jsonlib.dumps(s, indent=1) if json else render(s))
    return 0


def synth(
    spec: SynthSpec,
    *,
    out: str,
    census_out: str | None = None,
    census_version: str = "2025-01-30",
    quiet: bool = False,
) -> int:
    """Write a synthetic Census-like corpus as h5ad.

    Args:
        out: FILE.h5ad (with --files N: FILE-000.h5ad, ...).
        census_out: also write a Census-shaped SOMA copy to this directory.
        census_version: the build date recorded in that copy.
        quiet: no progress output.
    """
    from .synth import synthesize

    t0 = time.perf_counter()
    written = synthesize(spec, Path(out))
    if not quiet:
        n = sum(c for _, c in written)
        print(f"wrote {n:,} cells to {len(written)} file(s) in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
        for path, count in written:
            print(f"  {path}  {count:,} cells", file=sys.stderr)
    if census_out:
        from .census_copy import write_census_copy

        if spec.layout != "counts":
            raise IngestError("--census-out needs --layout counts (the copy's X layer 'raw' holds counts)")
        t0 = time.perf_counter()
        copy = write_census_copy([p for p, _ in written], census_out, version=census_version, organism=spec.organism)
        if not quiet:
            print(
                f"wrote a Census-shaped copy ({copy.organism}, {copy.n_obs:,} cells, {copy.n_datasets} datasets, "
                f"release {census_version}) to {copy.root} in {time.perf_counter() - t0:.1f} s",
                file=sys.stderr,
            )
    return 0


def publish(path: str, url: str, *, replace: bool = False, storage_options: str | None = None) -> int:
    """Copy a finished shard set to object storage (s3://, gs://, any fsspec URL), verified first, the
    manifest last (readers see no set or a whole one). Rerun to finish an interrupted copy.

    Args:
        path: the local shard set.
        url: where to put it, e.g. s3://bucket/shards/census-2025-01-30.
        replace: overwrite a different set already at the URL.
        storage_options: fsspec options as JSON, e.g. '{"client_kwargs": {"endpoint_url": "http://minio:9000"}}'
            (credentials come from the usual environment; AWS_ENDPOINT_URL works too).
    """
    from .publish import publish as run_publish

    try:
        options: dict[str, Any] | None = jsonlib.loads(storage_options) if storage_options else None
    except jsonlib.JSONDecodeError as exc:
        raise IngestError(f"--storage-options: not JSON ({exc})") from None
    sent = run_publish(path, url, replace=replace, storage_options=options)
    print(f"{url}: {'already published' if sent == 0 else f'{sent} file(s) sent, manifest last'}")
    return 0


#: the ``ingest`` commands: name -> typed function (its signature is the command line)
COMMANDS = {"build": build, "verify": verify, "inspect": inspect, "synth": synth, "publish": publish}


def parser():
    """The jsonargparse parser of ``COMMANDS`` (for tests and docs)."""
    from shards.commands import command_parser

    return command_parser("ingest", DESCRIPTION, COMMANDS)[0]


def main(argv: list[str] | None = None) -> int:
    return run("ingest", DESCRIPTION, COMMANDS, argv, interrupted="rerun the same command to resume")
