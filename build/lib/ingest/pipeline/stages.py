"""The stages of a build, in order, each a function with a typed result and its own resume point:

1. ``map_genes``: each input column's token and histogram row; writes ``vocab.csv``.
2. ``run_pass1``: per work unit, medians' histograms, keep/skip and split (``pass1/unit-*.npz``).
3. ``compute_medians``: the gene medians from the merged histograms (or the given ones); writes
   ``gene_medians.csv`` and tokenizes with the values exactly as written.
4. ``plan_layout``: the shards of each split and where each unit's cells start (pure arithmetic).
5. ``run_pass2``: per unit, tokenized cells scattered to their shards' buckets (``pass2/unit-*.arrow``).
6. ``finalize``: each shard gathered from the buckets and written (``done/shard-*.json``).
7. ``write_manifest``: ``index.json``, sealed, last: the commit point.

A stage's resume point is its files in the work directory: a rerun reuses every one that exists (and,
for shards, still hashes right) and computes only the rest. Each result depends only on the inputs,
the options and the seed, never on ``--workers``, so a resumed build ends byte-identical.

Long because it is the build's stages in order, one function each, with their typed results; reading them top
to bottom is reading the build."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from shards.format.labels import write_label_counts
from shards.format.manifest import dump_manifest
from shards.format.vocab import Vocabulary, vocab_to_csv
from shards.storage.atomic import sha256_file, sha256_path, write_bytes_atomic
from shards.storage.faults import fault_point

from ..errors import IngestError
from ..layout import ShardLayout, Unit, make_units, shard_layout
from ..medians import N_BINS, medians_from_histograms, medians_to_csv, read_medians
from ..options import BuildOptions
from ..sources.base import Prepared
from ..sources.presence import PRESENCE_NAME, write_presence
from ..sources.registry import source_kind
from ..split import SPLIT_NAMES
from .manifest import build_manifest
from .passes import (
    FileTask,
    Pass1Job,
    Pass2Job,
    Placement,
    ShardJob,
    finalize_shard,
    pass1_unit,
    pass2_unit,
    summarize_pass1,
)
from .progress import Reporter
from .runner import run_jobs

__all__ = [
    "BuildContext",
    "GeneMap",
    "Layout",
    "Medians",
    "Pass1",
    "Pass2",
    "compute_medians",
    "finalize",
    "map_genes",
    "plan_layout",
    "run_pass1",
    "run_pass2",
    "write_manifest",
]


@dataclass(frozen=True)
class BuildContext:
    """What every stage needs: the options, where the output and the work go, the source, progress."""

    opts: BuildOptions
    out: Path
    work: Path
    prepared: Prepared
    report: Reporter
    build_id: str


@dataclass(frozen=True)
class GeneMap:
    vocab: Vocabulary
    token_of: dict[str, int]
    tasks: list[FileTask]  # one per input: its columns' tokens and histogram rows
    dropped: dict[str, int]  # genes dropped, by reason (``no_median`` is filled in by the medians)


def map_genes(ctx: BuildContext, vocab: Vocabulary) -> GeneMap:
    """Each input column's token (-1: none) and histogram row; refuses inputs with no gene in the
    vocabulary. Writes ``vocab.csv`` (the same bytes on every rerun)."""
    files, opts = ctx.prepared.inputs, ctx.opts
    token_of = vocab.token_of()
    gene_index = pd.Index(vocab.gene_ids)
    dropped = {"missing_id": 0, "not_in_vocabulary": 0, "no_median": 0}
    if source_kind(ctx.prepared.kind).var_filter:
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
        columns = tuple(ctx.prepared.obs_columns)
        task = FileTask(f.spec, f.label, col_token, col_hrow, ids, columns, opts.split_by, opts.seed, opts.val_fraction)
        tasks.append(task)
    dropped["not_in_vocabulary"] = len(missing_vocab)
    if all((t.col_token < 0).all() for t in tasks):
        raise IngestError(f"{files[0].label}: no gene matches the vocabulary; check --vocab and --gene-id-column")
    write_bytes_atomic(ctx.out / "vocab.csv", vocab_to_csv(vocab))
    return GeneMap(vocab, token_of, tasks, dropped)


@dataclass(frozen=True)
class Pass1:
    units: list[Unit]
    paths: list[str]  # each unit's pass-1 file
    summaries: dict[int, dict]  # unit index -> kept cells per split, skipped cells per reason


def run_pass1(ctx: BuildContext, genes: GeneMap, supplied: dict[str, float] | None) -> Pass1:
    """Pass 1 over every unit not yet done (its ``pass1/unit-*.npz`` is the resume point)."""
    opts = ctx.opts
    units = make_units([f.n_obs for f in ctx.prepared.inputs], opts.unit_cells)
    token_median = None
    if supplied is not None:
        token_median = {genes.token_of[g]: m for g, m in supplied.items() if g in genes.token_of}
    paths = [str(ctx.work / "pass1" / f"unit-{u.index:06d}.npz") for u in units]
    summaries: dict[int, dict] = {}
    todo = []
    for u in units:
        if Path(paths[u.index]).exists():
            summaries[u.index] = summarize_pass1(paths[u.index])
        else:
            todo.append(u)
    with ctx.report.task("pass 1", sum(u.stop - u.start for u in units)) as advance:
        advance(sum(units[i].stop - units[i].start for i in summaries))

        def done(i: int, res: dict) -> None:
            summaries[todo[i].index] = res
            advance(todo[i].stop - todo[i].start)
            fault_point("pass1")

        jobs = [Pass1Job(genes.tasks[u.file], u, opts.block_cells, token_median, paths[u.index]) for u in todo]
        run_jobs(pass1_unit, jobs, opts.workers, done, opts.threads)
    return Pass1(units, paths, summaries)


@dataclass(frozen=True)
class Medians:
    token_median: dict[int, float]  # the values exactly as written to gene_medians.csv


def compute_medians(ctx: BuildContext, genes: GeneMap, pass1: Pass1, supplied: dict[str, float] | None) -> Medians:
    """The medians from pass 1's merged histograms (or the given ones), written to ``gene_medians.csv``
    and read back: tokenization uses the values exactly as written. Counts genes with no median."""
    vocab = genes.vocab
    if supplied is None:
        hist = sp.csr_matrix((len(vocab.gene_ids), N_BINS), dtype=np.int64)
        for path in pass1.paths:
            with np.load(path, allow_pickle=False) as z:
                if z["vals"].size:
                    hist = hist + sp.csr_matrix((z["vals"], (z["rows"], z["cols"])), shape=hist.shape)
        medians_csv = medians_to_csv(list(vocab.gene_ids), medians_from_histograms(hist))
    else:
        values = np.array([supplied.get(g, np.nan) for g in vocab.gene_ids])
        medians_csv = medians_to_csv(list(vocab.gene_ids), values)
    write_bytes_atomic(ctx.out / "gene_medians.csv", medians_csv)
    written = read_medians(ctx.out / "gene_medians.csv")
    token_median = {genes.token_of[g]: m for g, m in written.items()}
    used = {int(t) for task in genes.tasks for t in task.col_token[task.col_token >= 0]}
    genes.dropped["no_median"] = len(used - set(token_median))
    return Medians(token_median)


@dataclass(frozen=True)
class Layout:
    split_cells: dict[str, int]
    shards: ShardLayout
    unit_offsets: list[dict[str, int]]  # per unit: where its kept cells start in each split


def plan_layout(ctx: BuildContext, pass1: Pass1) -> Layout:
    """The shards of each split and each unit's first cell in its split (from pass 1's counts)."""
    split_cells = {s: sum(pass1.summaries[u.index]["kept"][s] for u in pass1.units) for s in SPLIT_NAMES}
    if sum(split_cells.values()) == 0:
        label = ctx.prepared.inputs[0].label
        raise IngestError(f"{label}: no cell has counts on a gene of the vocabulary; nothing to write")
    vf, total = ctx.opts.val_fraction, sum(split_cells.values())
    if vf > 0 and split_cells["val"] < 0.5 * vf * total:  # h5ad inputs were checked on their keys already
        raise IngestError(
            f"{ctx.prepared.inputs[0].label}: --val-fraction {vf:g} with --split-by {ctx.opts.split_by} sent "
            f"{split_cells['val']:,} of {total:,} cells with counts to val (asked for ~{vf * total:,.0f}); use "
            "--split-by with a column of more values (e.g. cell), a larger --val-fraction, or another --seed"
        )
    offsets = {s: 0 for s in SPLIT_NAMES}
    unit_offsets = []
    for u in pass1.units:
        unit_offsets.append(dict(offsets))
        for s in SPLIT_NAMES:
            offsets[s] += pass1.summaries[u.index]["kept"][s]
    return Layout(split_cells, shard_layout(split_cells, ctx.opts.cells_per_shard), unit_offsets)


@dataclass(frozen=True)
class Pass2:
    paths: list[str]  # each unit's bucket file (and its ``.map.json``: which batch goes to which shard)


def run_pass2(ctx: BuildContext, genes: GeneMap, medians: Medians, pass1: Pass1, layout: Layout) -> Pass2:
    """Pass 2 over every unit not yet done (its bucket file and map are the resume point)."""
    opts, units = ctx.opts, pass1.units
    paths = [str(ctx.work / "pass2" / f"unit-{u.index:06d}.arrow") for u in units]
    todo = [u for u in units if not (Path(paths[u.index]).exists() and Path(paths[u.index] + ".map.json").exists())]
    with ctx.report.task("tokenize", sum(layout.split_cells.values())) as advance:
        advance(sum(sum(pass1.summaries[u.index]["kept"].values()) for u in units if u not in todo))

        def done(i: int, res: dict) -> None:
            advance(res["cells"])
            fault_point("pass2")

        shards = layout.shards
        jobs = []
        for u in todo:
            offsets = layout.unit_offsets[u.index]
            place = Placement(
                offsets, layout.split_cells, shards.bounds, shards.first_cell, shards.first_shard, opts.seed
            )
            jobs.append(
                Pass2Job(
                    genes.tasks[u.file],
                    u,
                    opts.block_cells,
                    medians.token_median,
                    pass1.paths[u.index],
                    place,
                    paths[u.index],
                )
            )
        run_jobs(pass2_unit, jobs, opts.workers, done, opts.threads)
    return Pass2(paths)


def _sources(pass2: Pass2) -> dict[int, list[tuple[str, list[int]]]]:
    """For each shard, the bucket files holding its cells and the batches of each."""
    sources: dict[int, list[tuple[str, list[int]]]] = {}
    for path in pass2.paths:
        per: dict[int, list[int]] = {}
        for shard, batch in json.loads(Path(path + ".map.json").read_text()):
            per.setdefault(shard, []).append(batch)
        for shard, batches in per.items():
            sources.setdefault(shard, []).append((path, batches))
    return sources


def _still_done(out: Path, done: Path) -> dict | None:
    """A shard finished by an earlier run, if its files still hash as it recorded."""
    if not done.exists():
        return None
    info = json.loads(done.read_text())
    main = out / info["path"]
    if not (main.exists() and sha256_path(main) == info["sha256"]):
        return None
    if all((out / f["path"]).exists() and sha256_file(out / f["path"]) == f["sha256"] for f in info["files"]):
        return info
    return None


def finalize(ctx: BuildContext, pass2: Pass2, layout: Layout) -> dict[int, dict]:
    """Every shard gathered and written (``done/shard-*.json`` records each one finished)."""
    opts, out = ctx.opts, ctx.out
    sources = _sources(pass2)
    infos: dict[int, dict] = {}
    jobs, todo = [], []
    for shard, split, first, n in layout.shards.shards():
        done_path = ctx.work / "done" / f"shard-{shard:06d}.json"
        info = _still_done(out, done_path)
        if info is not None:
            infos[shard] = info
            continue
        todo.append(shard)
        jobs.append(ShardJob(shard, split, first, n, sources.get(shard, []), opts.format, str(out), str(done_path)))
    with ctx.report.task("write", layout.shards.n_shards, unit="shards") as advance:
        advance(len(infos))

        def done(i: int, info: dict) -> None:
            infos[todo[i]] = info
            advance(1)
            fault_point("finalize")

        run_jobs(finalize_shard, jobs, opts.workers, done, opts.threads)
    return infos


def write_manifest(ctx: BuildContext, genes: GeneMap, pass1: Pass1, infos: dict[int, dict]) -> dict:
    """``presence.parquet`` (when the source has a presence matrix) and ``labels.npz`` (per-shard label
    counts), then ``index.json``, sealed: the commit."""
    prepared = ctx.prepared
    presence = None
    if prepared.presence is not None:
        datasets = {k for info in infos.values() for k in info["stats"]["datasets"]}
        presence = write_presence(
            prepared.presence, prepared.inputs[0].ids, genes.token_of, datasets, ctx.out / PRESENCE_NAME
        )
    labels = write_label_counts(ctx.out, [infos[i].get("labels") for i in sorted(infos)])
    fault_point("manifest")
    manifest = build_manifest(
        ctx.opts, ctx.out, prepared, genes.vocab, infos, pass1.summaries, genes.dropped, ctx.build_id, presence, labels
    )
    dump_manifest(ctx.out, manifest)
    return manifest
