"""Linear-probe assessment: how well a linear model reads cell type off the embeddings.

Val cells are embedded, split in two halves by a hash of the cell id (stable across runs), a
logistic regression (scikit-learn) is fitted on one half and scored on the other, beside the
majority-class accuracy of the same split. Runs on global rank 0 only (no collectives), with the
unwrapped encoder, so it needs whole parameters: not under ZeRO-3.
"""

from __future__ import annotations

import logging
from typing import Any

import lightning.pytorch as pl
import numpy as np

from shards.loading.hashing import cell_hashes
from shards.loading.readers import ShardSetReader

from ..errors import ConfigError
from .compare import comparison_rows
from .embed import DEFAULT_POOLING, cell_metadata, embed_cells

__all__ = ["LinearProbe", "linear_probe"]

log = logging.getLogger(__name__)


def linear_probe(x: np.ndarray, labels: np.ndarray, ids: np.ndarray, seed: int = 0) -> dict[str, float]:
    """Accuracy of a logistic regression on held-out cells and of predicting the majority class."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    test = (cell_hashes(ids) % np.uint64(2)) == 1
    train = ~test
    if train.sum() < 2 or test.sum() < 1 or len(np.unique(labels[train])) < 2:
        raise ValueError("too few cells or cell types for a linear probe")
    scaler = StandardScaler().fit(x[train])
    clf = LogisticRegression(max_iter=500, random_state=seed).fit(scaler.transform(x[train]), labels[train])
    acc = float((clf.predict(scaler.transform(x[test])) == labels[test]).mean())
    values, counts = np.unique(labels[train], return_counts=True)
    majority = float((labels[test] == values[np.argmax(counts)]).mean())
    return {"accuracy": acc, "majority": majority, "cells": len(ids)}


class LinearProbe(pl.Callback):
    def __init__(
        self,
        every_n_steps: int = 500,
        max_cells: int = 4000,
        label: str = "cell_type",
        pooling: str = DEFAULT_POOLING,
        batch_size: int = 128,
        baselines: bool = True,
    ) -> None:
        """
        Args:
            every_n_steps: probe at the first validation after every N optimizer steps.
            max_cells: val cells embedded per probe.
            label: the metadata column to predict.
            pooling: cls or mean.
            batch_size: cells per forward pass.
            baselines: also compare the embedding with the standard baselines (PCA-50 of scanpy's default
                pipeline, PCA-50 of all genes, an untrained encoder of the same shape; scVI is left to
                ``report``) on held-out donors (``evidence.Baselines``; computed once per run).
        """
        self.every, self.max_cells, self.label = every_n_steps, max_cells, label
        self.pooling, self.batch_size = pooling, batch_size
        self._last = -1
        self.results: list[dict[str, Any]] = []
        self.baselines = baselines
        self._baselines: Any = None

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or trainer.global_step // self.every == self._last // self.every:
            return
        if "Stage3" in type(trainer.strategy).__name__ or getattr(trainer.strategy, "zero_stage_3", False):
            raise ConfigError("LinearProbe needs whole parameters: drop it under deepspeed_stage_3")
        self._last = trainer.global_step
        if not trainer.is_global_zero:
            return
        dm = trainer.datamodule
        where, split = dm.val_path or dm.path, dm.val_split
        reader = ShardSetReader(where, split, storage_options=dm.config.storage_options)
        ids, x = embed_cells(
            pl_module.model,
            reader,
            context_length=dm.config.context_length,
            pooling=self.pooling,
            batch_size=self.batch_size,
            limit=self.max_cells,
            value_bins=dm.config.value_bins,
            device=pl_module.device,
        )
        labels = cell_metadata(reader, ids)[self.label].astype(str).to_numpy()
        result = linear_probe(x, labels, ids)
        result["step"] = trainer.global_step
        self.results.append(result)
        pl_module.log_dict(
            {"val/probe_accuracy": result["accuracy"], "val/probe_majority": result["majority"]}, rank_zero_only=True
        )
        if self.baselines:
            self._compare(reader, trainer, pl_module, result)
        log.info(
            "linear probe (%s) at step %d: accuracy %.3f, majority class %.3f, %d cells",
            self.label,
            trainer.global_step,
            result["accuracy"],
            result["majority"],
            result["cells"],
        )

    def _compare(self, reader: ShardSetReader, trainer: pl.Trainer, pl_module: pl.LightningModule, result) -> None:
        """The embedding beside PCA-50 and an untrained encoder on held-out donors (logged as
        ``val/compare_<embedding>_<score>``); a set without two donors in the split says so once."""
        from .evidence import Baselines

        if self._baselines is None:
            try:
                self._baselines = Baselines(
                    reader,
                    pl_module.model.cfg,
                    self.label,
                    pooling=self.pooling,
                    limit=self.max_cells,
                    scvi=False,
                    device=pl_module.device,
                )
            except ValueError as exc:
                log.warning("LinearProbe: no comparison with the baselines (%s)", exc)
                self.baselines = False
                return
        comparison = self._baselines.compare(pl_module.model)
        result["comparison"] = comparison
        metrics = {
            f"val/compare_{name}_{score}": comparison[name][score]
            for name in ("pretrained", *comparison_rows(comparison))
            for score in ("linear", "knn", "mixing")
        }
        pl_module.log_dict(metrics, rank_zero_only=True)
