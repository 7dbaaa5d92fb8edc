"""``python -m training embed|export``: use a checkpoint outside the Trainer.

``export`` writes a plain ``{"state_dict", "encoder", "vocab_sha256"}`` file from a Lightning
checkpoint file or a DeepSpeed ZeRO checkpoint directory (parameters gathered to fp32 with
Lightning's ``convert_zero_checkpoint_to_fp32_state_dict``). ``embed`` writes an h5ad with
``.obsm["X_cellshard"]`` and the cells' metadata as ``.obs``, from any of those three inputs. The shard
set must use the checkpoint's vocabulary (checked by hash).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

import torch
from jsonargparse import ArgumentParser

from shards.errors import ShardError
from shards.loading.readers import ShardSetReader
from shards.storage.atomic import tmp_name

from .errors import ConfigError, first_line
from .evaluate.embed import cell_metadata, embed_cells
from .model import CellEncoder, EncoderConfig

__all__ = ["export_checkpoint", "load_encoder", "main"]


def _load(path: Path) -> dict[str, Any]:
    """Tensors and plain containers only (``weights_only``): a checkpoint from elsewhere cannot run code."""
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ConfigError(f"--ckpt {path}: cannot read it as a checkpoint ({first_line(exc)})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"--ckpt {path}: holds a {type(data).__name__}, not a checkpoint")
    return data


def _plain(ckpt: str | Path) -> dict[str, Any]:
    """``{"state_dict" (encoder keys), "encoder" (EncoderConfig fields), "vocab_sha256"}``."""
    path = Path(ckpt)
    if not path.exists():
        raise ConfigError(f"--ckpt {path}: no such file or directory")
    if path.is_dir():  # a DeepSpeed checkpoint directory
        from lightning.pytorch.utilities.deepspeed import convert_zero_checkpoint_to_fp32_state_dict

        with tempfile.TemporaryDirectory() as tmp:
            try:
                convert_zero_checkpoint_to_fp32_state_dict(str(path), f"{tmp}/fp32.ckpt")
            except Exception as exc:
                raise ConfigError(f"--ckpt {path}: not a DeepSpeed checkpoint directory ({exc})") from None
            data = _load(Path(tmp) / "fp32.ckpt")
    else:
        data = _load(path)
    if "encoder" in data and "state_dict" in data and "cellshard" not in data:
        return data  # already exported
    extra = data.get("cellshard")
    if extra is None:
        raise ConfigError(f"--ckpt {path}: not a cellshard checkpoint (no 'cellshard' entry)")
    states = {
        k.removeprefix("model.").replace("_orig_mod.", ""): v
        for k, v in data["state_dict"].items()
        if k.startswith("model.")
    }
    return {"state_dict": states, "encoder": extra["encoder"], "vocab_sha256": extra.get("vocab_sha256")}


def load_encoder(ckpt: str | Path) -> tuple[CellEncoder, dict[str, Any]]:
    plain = _plain(ckpt)
    model = CellEncoder(EncoderConfig(**plain["encoder"]))
    model.load_state_dict({k: v.float() for k, v in plain["state_dict"].items()})
    return model.eval(), plain


def export_checkpoint(ckpt: str | Path, out: str | Path) -> Path:
    plain = _plain(ckpt)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_name(out)
    torch.save(plain, tmp)
    tmp.replace(out)
    return out


def embed(
    ckpt: str,
    data: str,
    out: str,
    split: str = "all",
    pooling: str = "cls",
    batch_size: int = 64,
    context_length: int | None = None,
    limit: int | None = None,
    device: str = "cpu",
) -> Path:
    import anndata as ad
    import numpy as np

    model, plain = load_encoder(ckpt)
    model.to(device)
    splits = ["train", "val"] if split == "all" else [split]
    ids_all, x_all, meta_all = [], [], []
    for s in splits:
        try:
            reader = ShardSetReader(data, s)
        except ShardError as exc:
            if split == "all" and "no shard in split" in str(exc):
                continue
            raise ConfigError(f"--data {data} --split {split}: {exc}") from None
        if plain.get("vocab_sha256") and reader.manifest["vocab"]["sha256"] != plain["vocab_sha256"]:
            raise ConfigError(
                f"--data {data}: its vocabulary differs from the checkpoint's; build it with "
                "`ingest build --vocab <checkpoint dir>/vocab.csv --gene-medians "
                "<checkpoint dir>/gene_medians.csv`"
            )
        n = context_length or model.cfg.max_positions
        if n > model.cfg.max_positions:
            raise ConfigError(f"--context-length {n} exceeds the model's {model.cfg.max_positions} positions")
        ids, x = embed_cells(
            model,
            reader,
            context_length=n,
            pooling=pooling,
            batch_size=batch_size,
            limit=limit,
            value_bins=model.cfg.value_bins,
            device=device,
        )
        meta = cell_metadata(reader, ids)
        meta["split"] = s
        ids_all.append(ids)
        x_all.append(x)
        meta_all.append(meta)
    if not ids_all:
        raise ConfigError(f"--data {data}: no cells in split {split!r}")
    obs = _obs_table(meta_all)
    obs.index = obs.index.astype(str)
    adata = ad.AnnData(obs=obs, obsm={"X_cellshard": np.concatenate(x_all)})
    adata.uns["cellshard"] = {"checkpoint": str(ckpt), "pooling": pooling, "data": str(data)}
    target = Path(out)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_name(target).with_suffix(".h5ad")
    adata.write_h5ad(tmp)
    tmp.replace(target)
    return target


def _obs_table(frames):
    import pandas as pd

    frame = pd.concat(frames)
    for col in frame.columns:  # h5ad needs plain types
        if frame[col].dtype == object:
            frame[col] = frame[col].astype(str)
    return frame


def _parser() -> ArgumentParser:
    p = ArgumentParser(prog="python -m training", description="cellshard: use a trained checkpoint")
    sub = p.add_subcommands(dest="command")
    e = ArgumentParser(description="Embed the cells of a shard set into an h5ad (.obsm['X_cellshard']).")
    e.add_argument("--ckpt", type=str, required=True, help="a .ckpt file, DeepSpeed checkpoint dir or exported .pt")
    e.add_argument("--data", type=str, required=True, help="shard set (with the checkpoint's vocabulary)")
    e.add_argument("--out", type=str, required=True, help="output .h5ad")
    e.add_argument("--split", type=str, default="all", help="train, val or all")
    e.add_argument("--pooling", type=str, default="cls", help="cls or mean")
    e.add_argument("--batch-size", type=int, default=64)
    e.add_argument("--context-length", type=int, default=None, help="default: the model's")
    e.add_argument("--limit", type=int, default=None, help="at most this many cells per split")
    e.add_argument("--device", type=str, default="cpu")
    x = ArgumentParser(description="Write a plain state dict + config from a checkpoint (also ZeRO-3).")
    x.add_argument("--ckpt", type=str, required=True)
    x.add_argument("--out", type=str, required=True)
    r = ArgumentParser(description="Summarize a finished run against the frequency and majority baselines.")
    r.add_argument("--run", type=str, required=True, help="the run's trainer.default_root_dir")
    r.add_argument("--embeddings", type=str, default=None, help="val-cell embeddings from `embed` (else computed)")
    r.add_argument("--label", type=str, default="cell_type", help="metadata column for the linear probe")
    r.add_argument(
        "--reference", type=str, default=None, help="another run (e.g. uninterrupted): compare per-step train losses"
    )
    sub.add_subcommand("embed", e, help="cell embeddings -> h5ad")
    sub.add_subcommand("report", r, help="summary of a run against baselines")
    sub.add_subcommand("export", x, help="checkpoint -> plain state dict")
    return p


def main(argv: list[str] | None = None) -> int:
    ns = _parser().parse_args(argv)
    try:
        if ns.command == "report":
            from .evaluate.report import format_report, run_report

            r = ns.report
            print(format_report(run_report(r.run, r.embeddings, r.label, r.reference)))
        elif ns.command == "export":
            print(export_checkpoint(ns.export.ckpt, ns.export.out))
        else:
            a = ns.embed
            if a.pooling not in ("cls", "mean"):
                raise ConfigError(f"--pooling {a.pooling!r}: use cls or mean")
            print(embed(a.ckpt, a.data, a.out, a.split, a.pooling, a.batch_size, a.context_length, a.limit, a.device))
    except (ConfigError, ShardError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0
