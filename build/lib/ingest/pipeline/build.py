"""``ingest build``: h5ad inputs, the Census or a SOMA experiment → a tokenized, globally shuffled shard
set, resumable and atomic.

``build`` checks the options and the source before anything is written, takes the output directory's
lock, and runs the stages of ``stages`` in order; each stage's files in the work directory are its
resume point, and ``index.json`` is written last: the commit point.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from shards.format.manifest import Manifest, load_manifest
from shards.storage.atomic import sha256_file, write_bytes_atomic
from shards.storage.faults import fault_point

from ..errors import IngestError
from ..layout import make_units
from ..medians import read_medians
from ..options import BuildOptions
from ..sources.base import Prepared
from ..sources.prepare import prepare_source
from ..sources.registry import source_kind
from ..sources.soma import close_experiments
from ..vocab import build_vocab, load_vocab
from . import stages
from .lock import LOCK_NAME, BuildLock
from .progress import Reporter
from .workdir import (
    WORK_DIR,
    check_out_dir,
    interrupted_params,
    io_error_message,
    remove_stale_temporaries,
    writable_target,
)

__all__ = ["BuildResult", "build"]


class BuildResult(dict):
    """The manifest written, plus timing (``seconds``, ``cells_per_sec``) for reports."""


def build(opts: BuildOptions) -> BuildResult:
    opts.validate()
    report = Reporter(opts.quiet)
    started = time.perf_counter()
    out = Path(opts.out)
    writable_target(out)
    prepared = prepare_source(opts, interrupted_params(out))
    try:
        if opts.dry_run:
            return BuildResult(_plan_summary(opts, prepared), seconds=time.perf_counter() - started)
        return _build_prepared(opts, prepared, out, report, started)
    except BrokenProcessPool as exc:
        raise IngestError(
            f"--out {out}: a worker process died (killed, or out of memory: try fewer --workers or a smaller "
            "--block-cells); rerun the same command: finished work is kept and reused"
        ) from exc
    except OSError as exc:
        raise IngestError(io_error_message(exc, out)) from exc
    finally:
        for tmp, _ in prepared.staged:
            Path(tmp).unlink(missing_ok=True)
        close_experiments()


def _plan_summary(opts: BuildOptions, prepared: Prepared) -> dict:
    """What a build would read (``--dry-run``): the source checked and counted, nothing written.

    Beyond what preparing the source checks (options, columns, gene ids, the split), the first block of
    every input is read and checked as the build would (integer, finite, non-negative counts), so that a
    dry run that passes is not followed by a build that refuses the same input."""
    checked = 0
    staged = {name: tmp for tmp, name in prepared.staged}  # files a build would move into its work dir
    for f in prepared.inputs:
        spec = f.spec
        joinids = getattr(spec, "joinids_path", None)  # a SOMA source's matching rows, not yet in place
        if joinids and not Path(joinids).exists() and Path(joinids).name in staged:
            spec = dataclasses.replace(spec, joinids_path=staged[Path(joinids).name])
        src = spec.open()
        try:
            for a, b, _ in src.iter_blocks(0, min(f.n_obs, opts.block_cells), opts.block_cells, f.ids):
                checked += b - a
        finally:
            src.close()
    split = prepared.split
    if not source_kind(prepared.kind).split_checked_while_preparing and opts.val_fraction > 0:
        split = _check_soma_split(opts, prepared, staged)
    genes = {g for f in prepared.inputs for g in f.ids if g is not None}
    missing = sum(int(sum(g is None for g in f.ids)) - f.excluded for f in prepared.inputs)
    return {
        "dry_run": True,
        "source": {**prepared.source, "obs_columns": prepared.obs_columns},
        "cells_matched": prepared.cells_matched,
        "cells_checked": checked,
        "genes": len(genes),
        "genes_without_id": missing,  # dropped by the build (reason missing_id)
        "genes_left_out_by_var_filter": sum(f.excluded for f in prepared.inputs),
        "split": None
        if split is None
        else {
            "by": opts.split_by,
            "train_cells": split["train"],
            "val_cells": split["val"],
            "val_share": round(split["val_share"], 4),
            "asked": opts.val_fraction,
            "keys": split["keys"],
        },
        "work_units": len(make_units([f.n_obs for f in prepared.inputs], opts.unit_cells)),
    }


def _check_soma_split(opts: BuildOptions, prepared: Prepared, staged: dict[str, str]) -> dict:
    """The split check of a SOMA source on every matched cell's split key (read from obs only; the build
    checks the cells with counts after its first pass, so a dry run that passes is not refused there
    unless many cells have no counts)."""
    from types import SimpleNamespace

    from ..checks import check_split
    from .passes import split_keys

    task = SimpleNamespace(split_by=opts.split_by)
    keys = []
    for f in prepared.inputs:
        spec = f.spec
        joinids = getattr(spec, "joinids_path", None)
        if joinids and not Path(joinids).exists() and Path(joinids).name in staged:
            spec = dataclasses.replace(spec, joinids_path=staged[Path(joinids).name])
        src = spec.open()
        try:
            step = 1 << 20
            keys += [split_keys(src, task, a, min(a + step, f.n_obs)) for a in range(0, f.n_obs, step)]
        finally:
            src.close()
    return check_split(keys, opts.seed, opts.val_fraction, opts.split_by, str(prepared.inputs[0].label))


def _build_prepared(opts: BuildOptions, prepared: Prepared, out: Path, report: Reporter, started: float) -> BuildResult:
    files = prepared.inputs
    what = source_kind(prepared.kind).describe(prepared)
    report.info(f"[bold]ingest build[/]: {what}, {prepared.cells_matched:,} cells → {out}")
    vocab = load_vocab(opts.vocab) if opts.vocab else build_vocab([f.ids for f in files], [f.names for f in files])
    supplied = read_medians(opts.gene_medians) if opts.gene_medians else None
    build_id = opts.fingerprint(
        prepared.identity,
        prepared.obs_columns,
        sha256_file(opts.vocab) if opts.vocab else None,
        sha256_file(opts.gene_medians) if opts.gene_medians else None,
    )
    created = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise IngestError(f"--out {out}: cannot create the directory ({exc.strerror})") from exc
    if not os.access(out, os.W_OK):
        raise IngestError(f"--out {out}: the directory is not writable")
    with BuildLock(out):
        if check_out_dir(out, build_id):
            if (out / WORK_DIR).exists():  # killed after the commit point, while it removed its work files
                shutil.rmtree(out / WORK_DIR)
                report.info(f"{out}: removed the work directory a finished build left behind")
            report.info(f"{out}: already built (same inputs and options); nothing to do")
            return BuildResult(load_manifest(out), seconds=0.0)
        work = out / WORK_DIR
        removed = remove_stale_temporaries(out, work)
        if removed:
            report.info(f"{out}: removed {removed} temporary file(s) of an interrupted build")
        for sub in ("pass1", "pass2", "done"):
            (work / sub).mkdir(parents=True, exist_ok=True)
        for tmp, name in prepared.staged:
            shutil.move(tmp, work / name)
        params = {"build_id": build_id, "options": opts.redacted(), "soma_timestamp_ms": prepared.timestamp_ms}
        write_bytes_atomic(work / "params.json", json.dumps(params).encode())
        ctx = stages.BuildContext(opts, out, work, prepared, report, build_id)
        try:
            manifest = _run_stages(ctx, vocab, supplied)
        except IngestError:
            # bad input found mid-build (a cell's counts, an empty split): nothing worth resuming, and a
            # work directory left here would refuse the corrected command as "another build"
            _clear_uncommitted(out, remove_dir=created)
            raise
        fault_point("committed")  # the manifest is written; the work files are not yet removed
        shutil.rmtree(work)
    seconds = time.perf_counter() - started
    typed = Manifest.from_dict(manifest)
    rate = typed.n_cells / seconds if seconds > 0 else 0.0
    report.info(
        f"[green]done[/]: {typed.n_cells:,} cells, {len(typed.shards)} shards, "
        f"{typed.n_tokens:,} tokens in {seconds:.1f} s ({rate:,.0f} cells/s)"
    )
    for line in summary_lines(typed, prepared.cells_matched):
        report.info(line)
    return BuildResult(manifest, seconds=seconds, cells_per_sec=rate)


def summary_lines(manifest: Manifest, cells_in: int) -> list[str]:
    """What a build kept and dropped, and the split it made: three lines a user reads before training."""
    skipped = {k: v for k, v in manifest.counters.skipped_cells.items() if v}
    dropped = {k: v for k, v in manifest.counters.dropped_genes.items() if v}
    genes = manifest.genes

    def why(d: dict) -> str:
        return ", ".join(f"{k} {v:,}" for k, v in d.items()) or "none"

    lines = [
        f"  cells: {manifest.n_cells:,} kept of {cells_in:,}; dropped: {why(skipped)}",
        f"  genes: {genes:,} in the vocabulary; dropped: {why(dropped)}" if genes is not None else "",
    ]
    if manifest.val_fraction:
        train, val = (manifest.splits[k].n_cells if k in manifest.splits else 0 for k in ("train", "val"))
        share = val / manifest.n_cells if manifest.n_cells else 0.0
        lines.append(
            f"  split by {manifest.split_by}: train {train:,} cells, "
            f"val {val:,} ({100 * share:.1f}%, asked {100 * manifest.val_fraction:.1f}%)"
        )
    return [line for line in lines if line]


def _clear_uncommitted(out: Path, remove_dir: bool) -> None:
    """Remove what a build that failed before its commit point wrote (under its lock). ``check_out_dir``
    let it start only in a directory holding nothing but this build's own files, so all of it goes;
    the directory too when this build created it."""
    for entry in out.iterdir():
        if entry.name == LOCK_NAME:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
    if remove_dir:
        (out / LOCK_NAME).unlink(missing_ok=True)  # released on exit; the open handle keeps working
        out.rmdir()


def _run_stages(ctx: stages.BuildContext, vocab, supplied: dict[str, float] | None) -> dict:
    genes = stages.map_genes(ctx, vocab)
    pass1 = stages.run_pass1(ctx, genes, supplied)
    medians = stages.compute_medians(ctx, genes, pass1, supplied)
    layout = stages.plan_layout(ctx, pass1)
    pass2 = stages.run_pass2(ctx, genes, medians, pass1, layout)
    infos = stages.finalize(ctx, pass2, layout)
    return stages.write_manifest(ctx, genes, pass1, infos)
