"""``load_encoder``: a trained cellshard model as users want it, ready to embed their AnnData.

Accepts what ``python -m training export`` writes (a directory), a run's checkpoint (``last.ckpt``,
with ``vocab.csv`` and ``gene_medians.csv`` beside it) or an exported ``.pt`` with ``data=`` naming the
training shard set. ``embed`` tokenizes the AnnData exactly as training did (the model's vocabulary
and medians, through ``ingest build``) and returns one row per cell in ``obs`` order.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .checkpoints import load_model, training_files
from .embedding import embed_file, place_rows
from .evaluate.embed import DEFAULT_POOLING
from .model import CellEncoder

__all__ = ["PretrainedEncoder", "load_encoder"]


@dataclass
class PretrainedEncoder:
    """A trained encoder with the vocabulary and medians it was trained with."""

    model: CellEncoder
    vocab: Path
    medians: Path
    source: str

    @property
    def dim(self) -> int:
        return self.model.cfg.d_model

    def embed(
        self,
        adata: Any,
        *,
        layer: str | None = None,
        use_raw: bool = False,
        gene_id_column: str | None = None,
        allow_non_ensembl_ids: bool = False,
        pooling: str = DEFAULT_POOLING,
        batch_size: int = 64,
        context_length: int | None = None,
        device: str = "auto",
    ) -> np.ndarray:
        """(n_obs, dim) float32 embeddings of ``adata``'s cells in its ``obs`` order (an AnnData or an
        h5ad path); cells with no counts on the model's genes get NaN rows. Counts come from ``X``,
        ``layers[layer]`` or ``raw.X``; gene ids from ``var_names`` or ``var[gene_id_column]``."""
        import anndata as ad

        device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
        self.model.to(device)
        options = [*(["--layer", layer] if layer else []), *(["--use-raw"] if use_raw else [])]
        options += ["--gene-id-column", gene_id_column] if gene_id_column else []
        options += ["--allow-non-ensembl-ids"] if allow_non_ensembl_ids else []
        kw = {"pooling": pooling, "batch_size": batch_size, "context_length": context_length, "device": device}
        if isinstance(adata, (str, Path)):
            path = Path(adata)
            names, x = embed_file(self.model, self.vocab, self.medians, path, input_options=options, **kw)
            return place_rows(ad.read_h5ad(path, backed="r").obs_names, names, x, str(path))
        with tempfile.TemporaryDirectory(prefix="cellshard-embed-") as tmp:
            path = Path(tmp) / "cells.h5ad"
            adata.write_h5ad(path)
            names, x = embed_file(self.model, self.vocab, self.medians, path, input_options=options, **kw)
        return place_rows(adata.obs_names, names, x, "adata")


def load_encoder(path: str | Path, *, data: str | None = None) -> PretrainedEncoder:
    """The model at ``path`` (an exported directory, a checkpoint, or an exported ``.pt`` with ``data``),
    in eval mode, with the vocabulary and medians it was trained with."""
    model, plain = load_model(path)
    vocab, medians = training_files(plain, data, str(path))
    return PretrainedEncoder(model, vocab, medians, str(path))
