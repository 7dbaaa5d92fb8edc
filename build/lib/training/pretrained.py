"""``load_encoder``: a trained cellshard model as users want it, ready to embed their AnnData.

Accepts what ``python -m training export`` writes (a directory), a run's checkpoint (``last.ckpt``,
with ``vocab.csv`` and ``gene_medians.csv`` beside it) or an exported ``.pt`` with ``data=`` naming the
training shard set. ``embed`` tokenizes the AnnData exactly as training did (the model's vocabulary
and medians, in process: ``shards.tokens``) and returns one row per cell in ``obs`` order.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .checkpoints import load_model, training_files
from .embedding import embed_anndata, place_rows
from .errors import ConfigError
from .evaluate.embed import DEFAULT_POOLING
from .model import CellEncoder
from .user_cells import CountsSource

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
        if allow_non_ensembl_ids:
            warnings.warn(
                "allow_non_ensembl_ids has no effect: genes are matched against the model's vocabulary",
                DeprecationWarning,
                stacklevel=2,
            )
        counts = CountsSource(layer, use_raw, gene_id_column)
        kw = {"pooling": pooling, "batch_size": batch_size, "context_length": context_length, "device": device}
        if isinstance(adata, (str, Path)):
            path = Path(adata)
            if not path.is_file():
                raise ConfigError(f"adata={str(adata)!r}: no such file")
            adata = ad.read_h5ad(path, backed="r")
            where = str(path)
        else:
            where = "adata"
        names, x = embed_anndata(self.model, self.vocab, self.medians, adata, counts=counts, where=where, **kw)
        return place_rows(adata.obs_names, names, x, where)


def load_encoder(path: str | Path, *, data: str | None = None) -> PretrainedEncoder:
    """The model at ``path`` (an exported directory, a checkpoint, or an exported ``.pt`` with ``data``),
    in eval mode, with the vocabulary and medians it was trained with."""
    model, plain = load_model(path)
    vocab, medians = training_files(plain, data, str(path))
    return PretrainedEncoder(model, vocab, medians, str(path))
