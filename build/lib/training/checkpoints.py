"""Reading what training wrote, as one plain dict: a Lightning checkpoint file, a DeepSpeed ZeRO
checkpoint directory (gathered to fp32 with Lightning's ``convert_zero_checkpoint_to_fp32_state_dict``),
an exported model directory or ``.pt`` file; and the vocabulary and medians a model was trained with.
Loading is ``weights_only``: a checkpoint from elsewhere cannot run code."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import torch

from .errors import ConfigError, first_line
from .model import CellEncoder, EncoderConfig

__all__ = ["EXPORTED_WEIGHTS", "load_model", "plain_checkpoint", "resolve_checkpoint", "training_files"]

#: the weights file of an exported model directory (``export --out DIR``)
EXPORTED_WEIGHTS = "model.pt"


def _load(path: Path) -> dict[str, Any]:
    """Tensors and plain containers only (``weights_only``): a checkpoint from elsewhere cannot run code."""
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ConfigError(f"--ckpt {path}: cannot read it as a checkpoint ({first_line(exc)})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"--ckpt {path}: holds a {type(data).__name__}, not a checkpoint")
    return data


def resolve_checkpoint(ckpt: str | Path) -> Path:
    """The checkpoint a user means: a file, an exported model or DeepSpeed directory as given; a run
    directory (``trainer.default_root_dir``) means its ``checkpoints/last.ckpt``. A path that is not there
    is refused naming the checkpoints that are (the run's ``checkpoints/`` beside a missing file)."""
    path = Path(ckpt)
    if path.is_dir() and (path / "checkpoints" / "last.ckpt").exists():
        return path / "checkpoints" / "last.ckpt"
    if path.exists():
        return path
    near = [path.parent / "checkpoints" / path.name, path.parent / "checkpoints" / "last.ckpt"]
    found = next((str(p) for p in near if p.exists()), None)
    hint = f"; did you mean {found}?" if found else ""
    raise ConfigError(f"--ckpt {path}: no such file or directory{hint}")


def plain_checkpoint(ckpt: str | Path) -> dict[str, Any]:
    """``{"state_dict" (encoder keys), "encoder" (EncoderConfig fields), "vocab_sha256"}``."""
    path = resolve_checkpoint(ckpt)
    if path.is_dir() and (path / EXPORTED_WEIGHTS).is_file():  # an exported model directory
        return _load(path / EXPORTED_WEIGHTS)
    if path.is_dir() and not ((path / "latest").exists() or (path / "checkpoint").is_dir()):
        raise ConfigError(
            f"--ckpt {path}: a directory that is neither a run (no checkpoints/last.ckpt), an exported model "
            f"(no {EXPORTED_WEIGHTS}) nor a DeepSpeed checkpoint; give a .ckpt file or one of those"
        )
    if path.is_dir():  # a DeepSpeed checkpoint directory (ZeRO-3 writes ``latest`` and ``checkpoint/``)
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
    hparams = data.get("datamodule_hyper_parameters") or {}
    data_path = hparams.get("path") if isinstance(hparams.get("path"), str) else None
    extra = data.get("cellshard")
    if extra is None:
        raise ConfigError(f"--ckpt {path}: not a cellshard checkpoint (no 'cellshard' entry)")
    states = {
        k.removeprefix("model.").replace("_orig_mod.", ""): v
        for k, v in data["state_dict"].items()
        if k.startswith("model.")
    }
    return {
        "state_dict": states,
        "encoder": extra["encoder"],
        "vocab_sha256": extra.get("vocab_sha256"),
        "data_path": data_path,  # the shard set trained on: its vocab.csv and gene_medians.csv
    }


def load_model(ckpt: str | Path) -> tuple[CellEncoder, dict[str, Any]]:
    """(the encoder in eval mode, the plain checkpoint: encoder config, vocab hash, training data path)."""
    plain = plain_checkpoint(ckpt)
    model = CellEncoder(EncoderConfig(**plain["encoder"]))
    model.load_state_dict({k: v.float() for k, v in plain["state_dict"].items()})
    return model.eval(), plain


def training_files(plain: dict[str, Any], data: str | None, ckpt: str) -> tuple[Path, Path]:
    """The vocabulary and medians the model was trained with: those of ``data`` when given, else the
    copies a run writes beside its checkpoints, else those of the shard set the run read."""
    path = resolve_checkpoint(ckpt)
    beside = path if path.is_dir() else path.parent
    candidates = [data] if data else [str(beside), plain.get("data_path")]
    for where in filter(None, candidates):
        vocab, medians = Path(where) / "vocab.csv", Path(where) / "gene_medians.csv"
        if vocab.is_file() and medians.is_file():
            return vocab, medians
    looked = ", ".join(str(c) for c in candidates if c)
    raise ConfigError(
        f"--ckpt {ckpt}: cannot find the vocab.csv and gene_medians.csv it was trained with (looked in {looked}); "
        "pass --data with the shard set the model was trained on"
    )
