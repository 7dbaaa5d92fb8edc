"""``ingest build``: h5ad inputs → a tokenized, globally shuffled shard set, resumable and atomic.

Work happens in ``<out>/.cellshard-work/``: pass 1 (medians, keep/skip, split) and pass 2 (tokenize and
scatter to shard buckets) write one file per unit, finalization one shard at a time. Every one of those
files is renamed into place when complete, so a rerun after a crash skips what exists and recomputes
only the rest; since each result depends only on the inputs, options and seed, the resumed build ends
byte-identical to an uninterrupted one. ``index.json`` is written last: the commit point.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from shards.atomic import sha256_file, sha256_path, write_bytes_atomic
from shards.errors import ShardError
from shards.faults import fault_point
from shards.manifest import FORMAT_VERSION, INDEX_NAME, dump_manifest, load_manifest
from shards.vocab import vocab_to_csv

from .errors import IngestError
from .lock import LOCK_NAME, BuildLock
from .medians import BIN_RATIO, N_BINS, NORM_TOTAL, medians_from_histograms, medians_to_csv, read_medians
from .passes import GENES_PER_CELL_EDGES, FileTask, Placement, finalize_shard, pass1_unit, pass2_unit, summarize_pass1
from .plan import BuildOptions, make_units, shard_layout
from .presence import PRESENCE_NAME, write_presence
from .progress import Reporter
from .soma import close_experiments
from .sources import Prepared, prepare_source
from .split import SPLIT_NAMES
from .vocab import build_vocab, load_vocab

__all__ = ["BuildResult", "build", "io_error_message"]

WORK_DIR = ".cellshard-work"


def _package_version() -> str:
    try:
        return version("cellshard")
    except PackageNotFoundError:  # running from a source tree that is not installed
        return "0+unknown"


class BuildResult(dict):
    """The manifest written, plus timing (``seconds``, ``cells_per_sec``) for reports."""


def _run(fn: Callable, jobs: list[tuple], workers: int, on_done: Callable[[int, Any], None]) -> None:
    """Run ``fn(*job)`` for each job, in this process or a spawn pool; ``on_done(i, result)`` in order of completion."""
    if workers == 1 or len(jobs) <= 1:
        for i, job in enumerate(jobs):
            on_done(i, fn(*job))
        return
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
        futures = {pool.submit(fn, *job): i for i, job in enumerate(jobs)}
        try:
            for fut in as_completed(futures):
                on_done(futures[fut], fut.result())
        except BaseException:
            for fut in futures:
                fut.cancel()
            raise


def _check_out_dir(out: Path, build_id: str) -> bool:
    """True when ``out`` already holds this very build. Refuses a directory holding anything else."""
    if (out / INDEX_NAME).exists():
        try:
            manifest = load_manifest(out)
        except ShardError as exc:
            raise IngestError(f"{out}: holds an unreadable shard set ({exc}); choose another --out") from None
        if manifest.get("build_id") != build_id:
            raise IngestError(
                f"{out}: holds a different shard set (other inputs or options); choose another --out "
                "or delete the directory"
            )
        return True
    work = out / WORK_DIR
    params = work / "params.json"
    if params.exists():
        previous = json.loads(params.read_text()).get("build_id")
        if previous != build_id:
            raise IngestError(
                f"{out}: holds an interrupted build with other inputs or options; rerun that command to "
                f"finish it, or delete {work} to start over"
            )
        return False
    others = [p.name for p in out.iterdir() if p.name not in (LOCK_NAME, WORK_DIR)] if out.exists() else []
    if others:
        raise IngestError(f"{out}: not empty and not a cellshard build ({others[:3]}); choose an empty --out")
    return False


def _writable_target(out: Path) -> None:
    """Refuse an output that cannot be written before any source is read (a Census scan takes a while)."""
    probe = out
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if probe.exists() and not os.access(probe, os.W_OK):
        raise IngestError(f"--out {out}: {probe} is not writable")
    if probe.exists() and not probe.is_dir():
        raise IngestError(f"--out {out}: {probe} is a file, not a directory")


def _interrupted_params(out: Path) -> dict | None:
    params = out / WORK_DIR / "params.json"
    try:
        return json.loads(params.read_text())
    except (OSError, ValueError):
        return None


_OUT_OF_SPACE = {errno.ENOSPC: "no space left on the device", errno.EDQUOT: "disk quota exceeded",
                 errno.EFBIG: "file size limit exceeded"}  # fmt: skip
_DENIED = {errno.EACCES, errno.EPERM, errno.EROFS}


def io_error_message(exc: OSError, out: Path) -> str:
    """One line for an I/O error during a build: what failed, where, and that a rerun resumes."""
    where = exc.filename or f"--out {out}"
    code = f"[Errno {exc.errno}]" if exc.errno else type(exc).__name__
    resume = "then rerun the same command: finished work is kept and reused"
    if exc.errno in _OUT_OF_SPACE:
        return f"{where}: {_OUT_OF_SPACE[exc.errno]} {code}; free space for {out} (or choose another --out), {resume}"
    if exc.errno in _DENIED:
        return f"{where}: not writable by this user {code} ({exc.strerror}); fix the permissions of {out}, {resume}"
    return f"{where}: {exc.strerror or exc} {code} while building into {out}; fix the cause, {resume}"


def build(opts: BuildOptions) -> BuildResult:
    opts.validate()
    report = Reporter(opts.quiet)
    started = time.perf_counter()
    out = Path(opts.out)
    _writable_target(out)
    prepared = prepare_source(opts, _interrupted_params(out))
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


_TEMPORARY = re.compile(r"^\..+\.tmp-\d+$")  # ``atomic.tmp_name``: ``.<name>.tmp-<pid>``


def _remove_stale_temporaries(out: Path, work: Path) -> int:
    """Delete the temporary files an interrupted build left (under the lock, no writer is active)."""
    found = [p for p in out.iterdir() if _TEMPORARY.match(p.name)]
    if work.exists():
        found += [p for p in work.rglob(".*") if _TEMPORARY.match(p.name)]
    for path in found:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    return len(found)


def _plan_summary(opts: BuildOptions, prepared: Prepared) -> dict:
    """What a build would read (``--dry-run``): the source checked and counted, nothing written."""
    genes = {g for f in prepared.inputs for g in f.ids if g is not None}
    return {
        "dry_run": True,
        "source": {**prepared.source, "obs_columns": prepared.obs_columns},
        "cells_matched": prepared.cells_matched,
        "genes": len(genes),
        "genes_left_out_by_var_filter": sum(f.excluded for f in prepared.inputs),
        "work_units": len(make_units([f.n_obs for f in prepared.inputs], opts.unit_cells)),
    }


def _build_prepared(opts: BuildOptions, prepared: Prepared, out: Path, report: Reporter, started: float) -> BuildResult:
    files = prepared.inputs
    what = f"{len(files)} file(s)" if prepared.kind == "h5ad" else f"{prepared.kind} {files[0].label}"
    report.info(f"[bold]ingest build[/]: {what}, {prepared.cells_matched:,} cells → {out}")
    vocab = load_vocab(opts.vocab) if opts.vocab else build_vocab([f.ids for f in files], [f.names for f in files])
    supplied = read_medians(opts.gene_medians) if opts.gene_medians else None
    build_id = opts.fingerprint(
        prepared.identity,
        prepared.obs_columns,
        sha256_file(opts.vocab) if opts.vocab else None,
        sha256_file(opts.gene_medians) if opts.gene_medians else None,
    )
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise IngestError(f"--out {out}: cannot create the directory ({exc.strerror})") from exc
    if not os.access(out, os.W_OK):
        raise IngestError(f"--out {out}: the directory is not writable")
    with BuildLock(out):
        if _check_out_dir(out, build_id):
            report.info(f"{out}: already built (same inputs and options); nothing to do")
            return BuildResult(load_manifest(out), seconds=0.0)
        work = out / WORK_DIR
        removed = _remove_stale_temporaries(out, work)
        if removed:
            report.info(f"{out}: removed {removed} temporary file(s) of an interrupted build")
        for sub in ("pass1", "pass2", "done"):
            (work / sub).mkdir(parents=True, exist_ok=True)
        for tmp, name in prepared.staged:
            shutil.move(tmp, work / name)
        params = {"build_id": build_id, "options": opts.redacted(), "soma_timestamp_ms": prepared.timestamp_ms}
        write_bytes_atomic(work / "params.json", json.dumps(params).encode())
        manifest = _build_locked(opts, out, work, prepared, vocab, supplied, build_id, report)
        shutil.rmtree(work)
    seconds = time.perf_counter() - started
    rate = manifest["n_cells"] / seconds if seconds > 0 else 0.0
    report.info(
        f"[green]done[/]: {manifest['n_cells']:,} cells, {len(manifest['shards'])} shards, "
        f"{manifest['n_tokens']:,} tokens in {seconds:.1f} s ({rate:,.0f} cells/s)"
    )
    return BuildResult(manifest, seconds=seconds, cells_per_sec=rate)


def _build_locked(opts, out, work, prepared: Prepared, vocab, supplied, build_id, report) -> dict:
    files = prepared.inputs
    token_of = vocab.token_of()
    gene_index = pd.Index(vocab.gene_ids)
    dropped = {"missing_id": 0, "not_in_vocabulary": 0, "no_median": 0}
    if prepared.kind != "h5ad":
        dropped["var_filter"] = sum(f.excluded for f in files)
    missing_vocab: set[str] = set()
    tasks = []
    for f in files:
        ids = f.ids
        present = pd.notna(ids)
        dropped["missing_id"] += int((~present).sum()) - f.excluded
        col_hrow = np.where(present, gene_index.get_indexer(ids), -1).astype(np.int64)
        col_token = np.where(col_hrow >= 0, vocab.tokens[col_hrow], -1).astype(np.int64)
        missing_vocab.update(ids[present & (col_hrow < 0)].tolist())
        tasks.append(
            FileTask(
                f.spec,
                f.label,
                col_token,
                col_hrow,
                ids,
                tuple(prepared.obs_columns),
                opts.split_by,
                opts.seed,
                opts.val_fraction,
            )
        )
    dropped["not_in_vocabulary"] = len(missing_vocab)
    if all((t.col_token < 0).all() for t in tasks):
        raise IngestError(f"{files[0].label}: no gene matches the vocabulary; check --vocab and --gene-id-column")
    write_bytes_atomic(out / "vocab.csv", vocab_to_csv(vocab))

    # -- pass 1 ------------------------------------------------------------------------------------
    units = make_units([f.n_obs for f in files], opts.unit_cells)
    token_median = None
    if supplied is not None:
        token_median = {token_of[g]: m for g, m in supplied.items() if g in token_of}
    p1 = [str(work / "pass1" / f"unit-{u.index:06d}.npz") for u in units]
    summaries: dict[int, dict] = {}
    todo = []
    for u in units:
        if Path(p1[u.index]).exists():
            summaries[u.index] = summarize_pass1(p1[u.index])
        else:
            todo.append(u)
    with report.task("pass 1", sum(u.stop - u.start for u in units)) as advance:
        advance(sum(units[i].stop - units[i].start for i in summaries))

        def done1(i: int, res: dict) -> None:
            summaries[todo[i].index] = res
            advance(todo[i].stop - todo[i].start)
            fault_point("pass1")

        _run(
            pass1_unit,
            [(tasks[u.file], u, opts.block_cells, token_median, p1[u.index]) for u in todo],
            opts.workers,
            done1,
        )

    # -- medians -----------------------------------------------------------------------------------
    if supplied is None:
        hist = sp.csr_matrix((len(vocab.gene_ids), N_BINS), dtype=np.int64)
        for path in p1:
            with np.load(path, allow_pickle=False) as z:
                if z["vals"].size:
                    hist = hist + sp.csr_matrix((z["vals"], (z["rows"], z["cols"])), shape=hist.shape)
        medians = medians_from_histograms(hist)
        medians_csv = medians_to_csv(list(vocab.gene_ids), medians)
    else:
        values = np.array([supplied.get(g, np.nan) for g in vocab.gene_ids])
        medians_csv = medians_to_csv(list(vocab.gene_ids), values)
    write_bytes_atomic(out / "gene_medians.csv", medians_csv)
    written = read_medians(out / "gene_medians.csv")  # tokenize with the values exactly as written
    token_median = {token_of[g]: m for g, m in written.items()}
    used = {int(t) for task in tasks for t in task.col_token[task.col_token >= 0]}
    dropped["no_median"] = len(used - set(token_median))

    # -- layout --------------------------------------------------------------------------------------
    split_cells = {s: sum(summaries[u.index]["kept"][s] for u in units) for s in SPLIT_NAMES}
    if sum(split_cells.values()) == 0:
        raise IngestError(f"{files[0].label}: no cell has counts on a gene of the vocabulary; nothing to write")
    layout = shard_layout(split_cells, opts.cells_per_shard)
    offsets = {s: 0 for s in SPLIT_NAMES}
    unit_offsets = []
    for u in units:
        unit_offsets.append(dict(offsets))
        for s in SPLIT_NAMES:
            offsets[s] += summaries[u.index]["kept"][s]

    # -- pass 2 --------------------------------------------------------------------------------------
    p2 = [str(work / "pass2" / f"unit-{u.index:06d}.arrow") for u in units]
    todo2 = [u for u in units if not (Path(p2[u.index]).exists() and Path(p2[u.index] + ".map.json").exists())]
    with report.task("tokenize", sum(split_cells.values())) as advance:
        advance(sum(sum(summaries[u.index]["kept"].values()) for u in units if u not in todo2))

        def done2(i: int, res: dict) -> None:
            advance(res["cells"])
            fault_point("pass2")

        jobs = []
        for u in todo2:
            place = Placement(
                unit_offsets[u.index], split_cells, layout.bounds, layout.first_cell, layout.first_shard, opts.seed
            )
            jobs.append((tasks[u.file], u, opts.block_cells, token_median, p1[u.index], place, p2[u.index]))
        _run(pass2_unit, jobs, opts.workers, done2)

    # -- finalize ------------------------------------------------------------------------------------
    sources: dict[int, list[tuple[str, list[int]]]] = {}
    for path in p2:
        per: dict[int, list[int]] = {}
        for shard, batch in json.loads(Path(path + ".map.json").read_text()):
            per.setdefault(shard, []).append(batch)
        for shard, batches in per.items():
            sources.setdefault(shard, []).append((path, batches))
    infos: dict[int, dict] = {}
    jobs, todo3 = [], []
    for shard, split, first, n in layout.shards():
        done_path = work / "done" / f"shard-{shard:06d}.json"
        if done_path.exists():
            info = json.loads(done_path.read_text())
            main = out / info["path"]
            if (
                main.exists()
                and sha256_path(main) == info["sha256"]
                and all(
                    (out / f["path"]).exists() and sha256_file(out / f["path"]) == f["sha256"] for f in info["files"]
                )
            ):
                infos[shard] = info
                continue
        todo3.append(shard)
        jobs.append((shard, split, first, n, sources.get(shard, []), opts.format, str(out), str(done_path)))
    with report.task("write", layout.n_shards, unit="shards") as advance:
        advance(len(infos))

        def done3(i: int, info: dict) -> None:
            infos[todo3[i]] = info
            advance(1)
            fault_point("finalize")

        _run(finalize_shard, jobs, opts.workers, done3)

    presence = None
    if prepared.presence is not None:
        datasets = {k for info in infos.values() for k in info["stats"]["datasets"]}
        presence = write_presence(prepared.presence, files[0].ids, token_of, datasets, out / PRESENCE_NAME)
    fault_point("manifest")
    manifest = _manifest(opts, out, prepared, vocab, layout, infos, summaries, dropped, build_id, presence)
    dump_manifest(out, manifest)
    return manifest


def _manifest(opts, out, prepared, vocab, layout, infos, summaries, dropped, build_id, presence) -> dict:
    shards = [infos[i] for i in sorted(infos)]
    datasets: dict[str, int] = {}
    hist = np.zeros(len(GENES_PER_CELL_EDGES), dtype=np.int64)
    for s in shards:
        stats = s.pop("stats")
        for k, v in stats["datasets"].items():
            datasets[k] = datasets.get(k, 0) + v
        hist += np.asarray(stats["genes_per_cell_hist"])
    skipped: dict[str, int] = {}
    for summary in summaries.values():
        for k, v in summary["skipped"].items():
            skipped[k] = skipped.get(k, 0) + v
    splits = {
        name: {
            "n_cells": sum(s["n_cells"] for s in shards if s["split"] == name),
            "n_tokens": sum(s["n_tokens"] for s in shards if s["split"] == name),
            "n_shards": sum(1 for s in shards if s["split"] == name),
        }
        for name in SPLIT_NAMES
    }
    return {
        "format_version": FORMAT_VERSION,
        "format": opts.format,
        "build_id": build_id,
        "n_cells": sum(s["n_cells"] for s in shards),
        "n_tokens": sum(s["n_tokens"] for s in shards),
        "shards": shards,
        "splits": splits,
        "vocab": {
            "file": "vocab.csv",
            "sha256": sha256_file(out / "vocab.csv"),
            "size": vocab.size,
            "special_tokens": dict(sorted(vocab.special.items(), key=lambda kv: kv[1])),
        },
        "gene_medians": {
            "file": "gene_medians.csv",
            "sha256": sha256_file(out / "gene_medians.csv"),
            "source": "given" if opts.gene_medians else "computed",
            "method": f"log-binned histograms, bin ratio {BIN_RATIO}",
        },
        "tokenizer": {
            "name": "rank_value",
            "parameters": {
                "normalization_total": NORM_TOTAL,
                "order": "count/median descending, ties by token ascending",
                "truncation": None,
                "record_columns": ["genes", "counts"],
            },
        },
        "source": {
            **prepared.source,
            "inputs": [f.record for f in prepared.inputs],
            "obs_columns": list(prepared.obs_columns),
            "cells_matched": prepared.cells_matched,
        },
        "options": {
            "cells_per_shard": opts.cells_per_shard,
            "val_fraction": opts.val_fraction,
            "split_by": opts.split_by,
        },
        **({"presence": presence} if presence else {}),
        "seed": opts.seed,
        "counters": {"skipped_cells": skipped, "dropped_genes": dropped},
        "stats": {
            "datasets": dict(sorted(datasets.items())),
            "genes_per_cell_hist": {"edges": list(GENES_PER_CELL_EDGES), "counts": hist.tolist()},
        },
        "created_by": {"package": "cellshard", "version": _package_version()},
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
