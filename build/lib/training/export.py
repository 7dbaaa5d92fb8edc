"""``python -m training export``: a trained model as a directory users can load and share.

``model.pt`` (weights, encoder config, vocabulary hash), ``config.json``, ``vocab.csv``,
``gene_medians.csv`` and a README card (architecture, training data, last metrics), written to a
temporary sibling and renamed: the directory appears whole or not at all. ``training.load_encoder``
reads it back.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from shards.errors import ShardError
from shards.format.manifest import Manifest, read_manifest
from shards.storage.atomic import tmp_name

from .checkpoints import EXPORTED_WEIGHTS, plain_checkpoint, resolve_checkpoint, training_files
from .errors import ConfigError

__all__ = ["export_checkpoint"]


def export_checkpoint(ckpt: str | Path, out: str | Path, data: str | None = None) -> Path:
    """A model users can load (``training.load_encoder``): ``out`` a directory with ``model.pt`` (weights,
    encoder config, vocabulary hash), ``config.json``, ``vocab.csv``, ``gene_medians.csv`` and a README
    card (architecture, training data, metrics). ``out`` ending in ``.pt``: the weights file alone."""
    import json
    import shutil

    plain = plain_checkpoint(ckpt)
    out = Path(out)
    if out.suffix == ".pt":
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = tmp_name(out)
        torch.save(plain, tmp)
        tmp.replace(out)
        return out
    vocab, medians = training_files(plain, data, str(ckpt))
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"--out {out}: exists and is not empty; choose a new directory")
    stage = out.with_name(f".{out.name}.partial")
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    weights = {k: plain[k] for k in ("state_dict", "encoder", "vocab_sha256")}
    torch.save(weights, stage / EXPORTED_WEIGHTS)
    (stage / "config.json").write_text(json.dumps(plain["encoder"], indent=1) + "\n")
    shutil.copyfile(vocab, stage / "vocab.csv")
    shutil.copyfile(medians, stage / "gene_medians.csv")
    (stage / "README.md").write_text(_model_card(resolve_checkpoint(ckpt), plain))
    if out.exists():
        out.rmdir()
    stage.replace(out)  # the directory appears whole or not at all
    return out


def _manifest(directory: Path) -> Manifest | None:
    """The training set's manifest for the model card, or None when it cannot be read (moved, damaged)."""
    try:
        return read_manifest(directory)
    except ShardError:
        return None


def _model_card(ckpt: Path, plain: dict[str, Any]) -> str:
    """What the exported model is, what it was trained on and how it did (from the run's files)."""

    import pandas as pd

    enc = plain["encoder"]
    n_params = sum(int(v.numel()) for v in plain["state_dict"].values())
    lines = [
        "# cellshard encoder",
        "",
        f"A masked-gene-model transformer encoder: {enc.get('n_layers')} layers, d_model {enc.get('d_model')}, "
        f"{enc.get('n_heads')} heads, {enc.get('max_positions')} positions, vocabulary {enc.get('vocab_size')}; "
        f"{n_params:,} parameters. Exported from `{ckpt.name}`.",
        "",
        "```python",
        "import anndata as ad, training",
        "encoder = training.load_encoder('THIS_DIRECTORY')",
        "X = encoder.embed(ad.read_h5ad('mine.h5ad'), layer='counts')  # (cells, d_model), rows in obs order",
        "```",
        "",
        "## Training data",
        "",
    ]
    data = plain.get("data_path")
    index = Path(data) / "index.json" if data else None
    m = _manifest(index.parent) if index is not None and index.is_file() else None
    if m is not None:
        lines.append(f"- shard set `{data}`: {m.n_cells:,} cells, {m.n_tokens:,} tokens")
        lines.append(f"- build `{m.build_id[:16]}`, vocabulary sha256 `{plain.get('vocab_sha256')}`")
    else:
        lines.append(f"- vocabulary sha256 `{plain.get('vocab_sha256')}` (the shard set is not at hand)")
    run = ckpt.parent.parent if ckpt.is_file() else ckpt.parent
    history = run / "history.csv"
    lines += ["", "## Metrics", ""]
    if history.is_file():
        h = pd.read_csv(history)
        for col in ("train/loss", "val/loss", "val/masked_accuracy"):
            if col in h.columns and h[col].notna().any():
                last = h.dropna(subset=[col]).iloc[-1]
                lines.append(f"- {col}: {float(last[col]):.4g} at step {int(last['step'])}")
    else:
        lines.append("- the run's history.csv is not beside the checkpoint: no metrics recorded here")
    return "\n".join(lines) + "\n"
