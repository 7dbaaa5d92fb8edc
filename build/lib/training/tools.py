"""``python -m training embed|export|report``: use a checkpoint outside the Trainer.

Each command is a typed function below, registered in ``COMMANDS``; ``shards.commands`` makes the command
line from the signatures and docstrings (the same idiom as ``ingest``). ``embed`` writes an h5ad with
``.obsm["X_cellshard"]``: a copy of the user's own AnnData (``--h5ad``, tokenized in process with the
model's vocabulary and medians) or a shard set's cells with their metadata as ``.obs`` (``--data``: a set
whose vocabulary maps every gene id to the checkpoint's tokens). Checkpoints are read by
``checkpoints``; embedding is in ``embedding``, ``export`` in ``export``, ``report`` in ``evaluate.report``.
"""

from __future__ import annotations

import sys
from pathlib import Path

from shards.commands import run

from .errors import ConfigError
from .evaluate.defaults import DEFAULT_POOLING, DEMO_SEED_SPREAD, GATE_BASELINES, SPLIT_SEEDS

__all__ = ["COMMANDS", "main"]

DESCRIPTION = "cellshard: use a trained checkpoint"


def embed(
    *,
    ckpt: str,
    out: str,
    h5ad: str | None = None,
    data: str | None = None,
    layer: str | None = None,
    use_raw: bool = False,
    gene_id_column: str | None = None,
    allow_non_ensembl_ids: bool = False,
    split: str = "all",
    obs_columns: list[str] = ["all"],  # noqa: B006 (a command-line default, never mutated)
    pooling: str = DEFAULT_POOLING,
    batch_size: int = 64,
    context_length: int | None = None,
    limit: int | None = None,
    device: str = "auto",
    quiet: bool = False,
) -> int:
    """Cell embeddings (.obsm['X_cellshard']): of your own h5ad (--h5ad: a copy of your AnnData, same cells in
    the same order, with the embedding added) or of a shard set's cells (--data).

    Args:
        ckpt: a .ckpt file, a run directory (its checkpoints/last.ckpt), a DeepSpeed checkpoint dir or an
            exported model.
        out: the .h5ad to write.
        h5ad: your AnnData file: tokenized in process with the model's vocabulary and medians.
        data: a shard set to embed; with --h5ad: the shard set the model was trained on (default: the run's).
        layer: with --h5ad: read counts from layers[NAME].
        use_raw: with --h5ad: read counts from raw.X.
        gene_id_column: with --h5ad: the var column of the gene ids the model knows (Ensembl ids).
        allow_non_ensembl_ids: no effect, kept for old scripts: --h5ad's genes are matched against the model's
            vocabulary.
        split: with --data: train, val or all.
        obs_columns: with --data: the stored metadata columns to keep in .obs (all, or names: space- or
            comma-separated, as ingest build --obs-columns takes them); source_file/obs_name (or
            source_uri/soma_joinid) and split are always added.
        pooling: mean (default) or cls.
        batch_size: cells per forward pass.
        context_length: default: the model's.
        limit: with --data: at most this many cells per split.
        device: auto (cuda if available, else cpu), cpu, cuda:0 ...
        quiet: no progress bar.
    """
    import torch

    from .embedding import embed as embed_set
    from .embedding import embed_h5ad
    from .user_cells import CountsSource

    if pooling not in ("cls", "mean"):
        raise ConfigError(f"--pooling {pooling!r}: use cls or mean")
    device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
    if h5ad is not None:
        if Path(out).resolve() == Path(h5ad).resolve():
            raise ConfigError(
                f"--out {out} is the input file (--h5ad): give another path for the embedded copy "
                "(your file is left as it is)"
            )
        path, missing = embed_h5ad(
            ckpt,
            h5ad,
            out,
            data=data,
            pooling=pooling,
            batch_size=batch_size,
            context_length=context_length,
            device=device,
            counts=CountsSource(layer, use_raw, gene_id_column, cli=True),
            progress=not quiet,
        )
        if missing:
            print(f"warning: {missing} cell(s) have no counts on the model's genes: NaN rows", file=sys.stderr)
        print(path)
        return 0
    if data is None:
        raise ConfigError("embed: give --h5ad (your AnnData) or --data (a shard set)")
    print(
        embed_set(
            ckpt, data, out, split, pooling, batch_size, context_length, limit, device, obs_columns, progress=not quiet
        )
    )
    return 0


def export(*, ckpt: str, out: str, data: str | None = None) -> int:
    """A model users can load with training.load_encoder: a directory with the weights, config.json, vocab.csv,
    gene_medians.csv and a README card (from a .ckpt or a ZeRO-3 checkpoint directory).

    Args:
        ckpt: a .ckpt file, a run directory or a DeepSpeed checkpoint dir.
        out: the directory to write (a name ending .pt: weights only).
        data: the training shard set (default: found from the run).
    """
    from .export import export_checkpoint

    print(export_checkpoint(ckpt, out, data))
    return 0


def report(
    *,
    run: str,
    embeddings: str | None = None,
    label: str = "cell_type",
    reference: str | None = None,
    group_by: str | None = None,
    split_seeds: list[int] = list(SPLIT_SEEDS),  # noqa: B006 (a command-line default)
    scvi: bool | None = None,
    must_beat: list[str] | None = None,
    seed_spread: float = DEMO_SEED_SPREAD,
) -> int:
    """Summarize a finished run against the frequency baseline and the standard embedding baselines.

    Args:
        run: the run's trainer.default_root_dir.
        embeddings: val-cell embeddings from `embed` (else computed).
        label: the metadata column for the linear probe.
        reference: another run (e.g. uninterrupted): compare per-step train losses.
        group_by: the obs column whose groups are held out together (default: donor_id when the cells have
            several donors, else the column the set was split by).
        split_seeds: the held-out group splits to average over (each seed draws half the groups).
        scvi: also fit scVI as a baseline (default: when scvi-tools is installed; false skips it).
        must_beat: exit 1 unless the run beats each named baseline (pca50, pca50_all, untrained, scvi,
            frequency; space- or comma-separated): an embedding by more than 1.96 x the sampling error of the
            held-out accuracy difference plus --seed-spread, frequency by a val loss 0.05 below it.
        seed_spread: the recipe's run-to-run range of the held-out linear probe (accuracy, 0-1), added to the
            margin.
    """
    from .evaluate.report import format_report, gate, run_report

    must = [b for part in must_beat or [] for b in part.split(",") if b]
    if must:
        gate({}, [b for b in must if b not in GATE_BASELINES])  # a mistyped name fails before the work
    summary = run_report(run, embeddings, label, reference, group_by=group_by, split_seeds=split_seeds, scvi=scvi)
    print(format_report(summary))
    failures = gate(summary, must, seed_spread) if must else []
    for reason in failures:
        print(f"error: --must-beat {reason}", file=sys.stderr)
    return 1 if failures else 0


#: the ``python -m training`` commands besides fit/validate: name -> typed function
COMMANDS = {"embed": embed, "export": export, "report": report}


def main(argv: list[str] | None = None) -> int:
    return run("python -m training", DESCRIPTION, COMMANDS, argv)
