"""``python -m training embed|export|report``: use a checkpoint outside the Trainer.

``embed`` writes an h5ad with ``.obsm["X_cellshard"]``: a copy of the user's own AnnData (``--h5ad``,
tokenized with the model's vocabulary and medians) or a shard set's cells with their metadata as
``.obs`` (``--data``: a set whose vocabulary maps every gene id to the checkpoint's tokens). Checkpoints
are read by ``checkpoints``; embedding is in ``embedding``, ``export`` in ``export``, ``report`` in
``evaluate.report``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from jsonargparse import ArgumentParser

from shards.errors import ShardError

from .embedding import embed, embed_h5ad
from .errors import ConfigError
from .evaluate.compare import SPLIT_SEEDS
from .evaluate.embed import DEFAULT_POOLING
from .evaluate.report import DEMO_SEED_SPREAD, GATE_BASELINES, format_report, gate, run_report
from .export import export_checkpoint
from .user_cells import CountsSource

__all__ = ["main"]


def _parser() -> ArgumentParser:
    p = ArgumentParser(prog="python -m training", description="cellshard: use a trained checkpoint")
    sub = p.add_subcommands(dest="command")
    e = ArgumentParser(
        description="Cell embeddings (.obsm['X_cellshard']): of your own h5ad (--h5ad: a copy of your AnnData, "
        "same cells in the same order, with the embedding added) or of a shard set's cells (--data)."
    )
    e.add_argument("--ckpt", type=str, required=True, help="a .ckpt file, DeepSpeed checkpoint dir or exported .pt")
    e.add_argument("--h5ad", type=str, default=None, help="your AnnData file: tokenized with the model's vocabulary")
    e.add_argument(
        "--data",
        type=str,
        default=None,
        help="a shard set to embed; with --h5ad: the shard set the model was trained on (default: the run's)",
    )
    e.add_argument("--out", type=str, required=True, help="output .h5ad")
    e.add_argument("--layer", type=str, default=None, help="with --h5ad: read counts from layers[NAME]")
    e.add_argument("--use-raw", action="store_true", help="with --h5ad: read counts from raw.X")
    e.add_argument("--gene-id-column", type=str, default=None, help="with --h5ad: the var column of Ensembl ids")
    e.add_argument(
        "--allow-non-ensembl-ids",
        action="store_true",
        help="no effect, kept for old scripts: --h5ad's genes are matched against the model's vocabulary",
    )
    e.add_argument("--split", type=str, default="all", help="with --data: train, val or all")
    e.add_argument(
        "--obs-columns",
        type=str,
        nargs="+",
        default=["all"],
        help="with --data: the stored metadata columns to keep in .obs (all, or names: space- or comma-separated, "
        "as ingest build --obs-columns takes them); source_file/obs_name (or source_uri/soma_joinid) and split "
        "are always added",
    )
    e.add_argument("--pooling", type=str, default=DEFAULT_POOLING, help="mean (default) or cls")
    e.add_argument("--batch-size", type=int, default=64, help="cells per forward pass")
    e.add_argument("--context-length", type=int, default=None, help="default: the model's")
    e.add_argument("--limit", type=int, default=None, help="with --data: at most this many cells per split")
    e.add_argument("--device", type=str, default="auto", help="auto (cuda if available, else cpu), cpu, cuda:0 ...")
    e.add_argument("--quiet", action="store_true", help="no progress bar")
    x = ArgumentParser(
        description="A model users can load with training.load_encoder: a directory with the weights, config.json, "
        "vocab.csv, gene_medians.csv and a README card (from a .ckpt or a ZeRO-3 checkpoint directory)."
    )
    x.add_argument("--ckpt", type=str, required=True, help="a .ckpt file or DeepSpeed checkpoint dir")
    x.add_argument("--out", type=str, required=True, help="the directory to write (a name ending .pt: weights only)")
    x.add_argument("--data", type=str, default=None, help="the training shard set (default: found from the run)")
    r = ArgumentParser(description="Summarize a finished run against the frequency and majority baselines.")
    r.add_argument("--run", type=str, required=True, help="the run's trainer.default_root_dir")
    r.add_argument("--embeddings", type=str, default=None, help="val-cell embeddings from `embed` (else computed)")
    r.add_argument("--label", type=str, default="cell_type", help="metadata column for the linear probe")
    r.add_argument(
        "--reference", type=str, default=None, help="another run (e.g. uninterrupted): compare per-step train losses"
    )
    r.add_argument(
        "--group-by",
        type=str,
        default=None,
        help="the obs column whose groups are held out together (default: donor_id when the cells have several "
        "donors, else the column the set was split by)",
    )
    r.add_argument(
        "--split-seeds",
        type=int,
        nargs="+",
        default=list(SPLIT_SEEDS),
        help="the held-out group splits to average over (each seed draws half the groups)",
    )
    r.add_argument(
        "--scvi",
        type=bool | None,
        default=None,
        help="also fit scVI as a baseline (default: when scvi-tools is installed; false skips it)",
    )
    r.add_argument(
        "--must-beat",
        type=str,
        nargs="+",
        default=None,
        help=f"exit 1 unless the run beats each named baseline ({', '.join(GATE_BASELINES)}; space- or "
        "comma-separated): an embedding by more than 1.96 x the sampling error of the held-out accuracy "
        "difference plus --seed-spread, frequency by a val loss 0.05 below it",
    )
    r.add_argument(
        "--seed-spread",
        type=float,
        default=DEMO_SEED_SPREAD,
        help="the recipe's run-to-run range of the held-out linear probe (accuracy, 0-1), added to the margin",
    )
    sub.add_subcommand("embed", e, help="cell embeddings -> h5ad")
    sub.add_subcommand("report", r, help="summary of a run against baselines")
    sub.add_subcommand("export", x, help="checkpoint -> plain state dict")
    return p


def main(argv: list[str] | None = None) -> int:
    ns = _parser().parse_args(argv)
    try:
        if ns.command == "report":
            r = ns.report
            must = [b for part in r.must_beat or [] for b in part.split(",") if b]
            if must:
                gate({}, [b for b in must if b not in GATE_BASELINES])  # a mistyped name fails before the work
            summary = run_report(
                r.run, r.embeddings, r.label, r.reference, group_by=r.group_by, split_seeds=r.split_seeds, scvi=r.scvi
            )
            print(format_report(summary))
            failures = gate(summary, must, r.seed_spread) if must else []
            for reason in failures:
                print(f"error: --must-beat {reason}", file=sys.stderr)
            if failures:
                return 1
        elif ns.command == "export":
            print(export_checkpoint(ns.export.ckpt, ns.export.out, ns.export.data))
        else:
            a = ns.embed
            if a.pooling not in ("cls", "mean"):
                raise ConfigError(f"--pooling {a.pooling!r}: use cls or mean")
            device = ("cuda" if torch.cuda.is_available() else "cpu") if a.device == "auto" else a.device
            if a.h5ad is not None:
                if Path(a.out).resolve() == Path(a.h5ad).resolve():
                    raise ConfigError(
                        f"--out {a.out} is the input file (--h5ad): give another path for the embedded copy "
                        "(your file is left as it is)"
                    )
                counts = CountsSource(a.layer, a.use_raw, a.gene_id_column, cli=True)
                path, missing = embed_h5ad(
                    a.ckpt,
                    a.h5ad,
                    a.out,
                    data=a.data,
                    pooling=a.pooling,
                    batch_size=a.batch_size,
                    context_length=a.context_length,
                    device=device,
                    counts=counts,
                    progress=not a.quiet,
                )
                if missing:
                    print(f"warning: {missing} cell(s) have no counts on the model's genes: NaN rows", file=sys.stderr)
                print(path)
            elif a.data is None:
                raise ConfigError("embed: give --h5ad (your AnnData) or --data (a shard set)")
            else:
                print(
                    embed(
                        a.ckpt,
                        a.data,
                        a.out,
                        a.split,
                        a.pooling,
                        a.batch_size,
                        a.context_length,
                        a.limit,
                        device,
                        a.obs_columns,
                        progress=not a.quiet,
                    )
                )
    except (ConfigError, ShardError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0
