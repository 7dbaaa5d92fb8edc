"""``CellDataModule``: the streaming stage as a ``LightningDataModule`` (config keys ``data.*``).

Train batches come from ``CellDataLoader`` (torchdata's StatefulDataLoader with a rank-independent
state): Lightning's fit loop saves that state in the checkpoint and loads it back on resume, so a
resumed run continues with the next batch. The validation loader pads the remainder (padded repeats
weigh 0), keeps epoch 0 (the same masks at every validation) and so scores every val cell once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning.pytorch as pl

from shards import CellDataLoader, ShardedCellDataset, ShardError
from shards.dataset import check_options
from shards.panels import PanelFilter
from shards.readers import ShardSetReader
from shards.remote import redact, redact_options
from shards.streams import MultiReader, Stream
from shards.vocab import vocab_to_csv
from shards.weighting import Weighting

from .errors import ConfigError

__all__ = ["CREDENTIAL_KEYS", "CellDataModule"]

#: ``data.*`` keys that may hold credentials (URLs, storage options): redacted wherever they are written
CREDENTIAL_KEYS = ("path", "val_path", "streams", "storage_options", "cache_dir")


class CellDataModule(pl.LightningDataModule):
    def __init__(
        self,
        path: str | None = None,
        val_split: str | None = "val",
        val_path: str | None = None,
        train_split: str = "train",
        batch_size: int = 32,
        val_batch_size: int | None = None,
        context_length: int = 2048,
        num_workers: int = 2,
        seed: int = 0,
        remainder: str = "drop",
        value_bins: int = 0,
        balance_tokens: bool = False,
        token_budget: int | None = None,
        on_error: str = "raise",
        cache_dir: str | None = None,
        cache_bytes: int | None = None,
        storage_options: dict[str, Any] | None = None,
        persistent_workers: bool = True,
        prefetch_factor: int | None = None,
        return_cell_ids: bool = False,
        streams: list[dict[str, Any]] | None = None,
        vocab_join: str = "same",
        num_samples: int | None = None,
        replacement: bool = False,
        weighting: dict[str, Any] | None = None,
        group_by: str | None = None,
        panels: dict[str, Any] | None = None,
    ) -> None:
        """
        Args:
            path: the shard set (directory or URL) to train on (or give ``streams``).
            val_split: the split of ``path`` to validate on; null turns validation off.
            val_path: a separate shard set for validation (its ``val_split`` is used).
            train_split: the split to train on.
            batch_size: cells per batch and rank.
            val_batch_size: cells per validation batch (default: batch_size).
            context_length: tokens per cell including ``<cls>`` and ``<eos>``.
            num_workers: DataLoader worker processes per rank (spawned).
            seed: the loader's seed (shuffle, masking).
            remainder: ``drop`` or ``pad`` for the cells left over by whole batches.
            value_bins: scGPT value bins (0 = off); must equal ``model.value_bins``.
            balance_tokens: balance tokens, not only cells, across ranks.
            token_budget: batch by a token budget instead of a fixed cell count.
            on_error: ``raise`` or ``skip`` cells of corrupt ranges (with zero loss weight).
            cache_dir: local cache directory for a remote shard set.
            cache_bytes: size limit of that cache.
            storage_options: fsspec options for a remote shard set.
            persistent_workers: keep workers between epochs.
            prefetch_factor: batches prefetched per worker.
            return_cell_ids: put each batch's cell ids in ``batch["cell_id"]`` (for callbacks that log
                or audit what was trained on).
            streams: several shard sets mixed per epoch instead of ``path``: a list of
                ``{path, weight | repeat | choose, split, name}``.
            vocab_join: ``same`` (the streams' vocabularies must be identical) or ``remap`` (one token
                space, the union by gene id; the first stream's ids are kept).
            num_samples: cells per epoch (default: the streams' natural total).
            replacement: draw cells with replacement (default: each at most ``ceil(n / N)`` times).
            weighting: weight cells by a metadata column: ``{column, scheme: inverse | table,
                smoothing, table, default, curriculum_epochs}``.
            group_by: a metadata column; every train batch holds cells of one of its values.
            panels: restrict tokens to gene panels: ``{files: [csv | {path, organism}]}`` or
                ``{random_genes: N}``.
        """
        super().__init__()
        self.save_hyperparameters()
        self.path, self.val_path = path, val_path
        self.storage_options, self.cache_dir = storage_options, cache_dir
        # what is logged and checkpointed carries no credentials; the loaders use the attributes above
        self.save_hyperparameters(
            {k: redact_options(v) if k in CREDENTIAL_KEYS else v for k, v in self.hparams.items()}
        )
        if (path is None) == (streams is None):
            raise ConfigError("data: give data.path (one shard set) or data.streams (several), exactly one")
        try:
            self.streams = [Stream.parse(s, f"data.streams[{i}]") for i, s in enumerate(streams or [])]
            self.reader = MultiReader(self.streams or [Stream(path)], train_split, vocab=vocab_join,
                                      storage_options=storage_options)  # fmt: skip
            self.vocab = self.reader.vocab()
            if weighting is not None:
                Weighting.parse(weighting, "data.weighting.")
            if panels is not None:
                PanelFilter.parse(panels, self.vocab, seed, "data.panels.")
        except (ShardError, FileNotFoundError) as exc:
            what = f"data.path={redact(path)!r}" if path is not None else "data.streams"
            raise ConfigError(f"{what}: {exc}; point it at shard sets from `ingest build`") from None
        if group_by is not None and token_budget is not None:
            raise ConfigError("data.group_by and data.token_budget do not combine; unset one")
        for key, column in (("data.weighting.column", (weighting or {}).get("column")), ("data.group_by", group_by)):
            for reader in self.reader.readers if column else []:  # now, before the run writes anything
                try:
                    reader.column(0, column)
                except ShardError as exc:
                    raise ConfigError(f"{key}={column!r}: {exc}") from None
        if streams is not None and val_split is not None and val_path is None:
            try:  # validation reads every stream's val split, unweighted
                MultiReader(self.streams, val_split, vocab=vocab_join, storage_options=storage_options)
            except ShardError as exc:
                raise ConfigError(f"data.val_split={val_split!r}: {exc}; set data.val_path, or null to skip "
                                  "validation") from None  # fmt: skip
        elif val_split is not None:
            where = val_path or path
            try:
                val_reader = ShardSetReader(where, val_split, storage_options=storage_options)
            except ShardError as exc:
                raise ConfigError(
                    f"data.val_split={val_split!r} (data.val_path={redact_options(val_path)!r}): {exc}; "
                    "set data.val_split to a split of the set, or null to skip validation"
                ) from None
            if val_reader.manifest["vocab"]["sha256"] != self.vocab_sha256:
                raise ConfigError(
                    f"data.val_path={redact_options(val_path)!r}: its vocabulary differs from data.path's; build "
                    f"it with `ingest build --vocab {redact(path)}/vocab.csv`"
                )
        if value_bins and value_bins < 2:
            raise ConfigError(f"data.value_bins={value_bins}: use 0 (off) or at least 2")
        if num_workers < 0:
            raise ConfigError(f"data.num_workers={num_workers}: must be 0 (in process) or more")
        if val_batch_size is not None and val_batch_size < 1:
            raise ConfigError(f"data.val_batch_size={val_batch_size}: must be at least 1")
        try:  # the loader's own checks, now: before a run writes anything
            check_options(batch_size=batch_size, context_length=context_length, remainder=remainder,
                          on_error=on_error, token_budget=token_budget, prefix="data.")  # fmt: skip
        except ShardError as exc:
            raise ConfigError(str(exc)) from None
        self.train_loader: CellDataLoader | None = None

    # -- what the model and checkpoints need from the data -------------------------------------------
    @property
    def vocab_size(self) -> int:
        return self.vocab.size

    @property
    def vocab_sha256(self) -> str:
        return self.reader.vocab_sha256()

    def side_files(self) -> dict[str, bytes]:
        """``vocab.csv`` and ``gene_medians.csv`` of the shard set, to be copied beside checkpoints. With
        a remapped vocabulary: the joint ``vocab.csv`` and each stream's ``gene_medians.<stream>.csv``."""

        def read(reader: ShardSetReader, key: str) -> bytes:
            name = reader.manifest[key]["file"]
            return reader._fetch(name) if reader.remote else (Path(reader.root) / name).read_bytes()

        readers = self.reader.readers
        if self.reader.vocab_mode == "same":
            return {readers[0].manifest[k]["file"]: read(readers[0], k) for k in ("vocab", "gene_medians")}
        medians = {f"gene_medians.{n}.csv": read(r, "gene_medians") for n, r in zip(self.reader.names, readers,
                                                                                     strict=True)}  # fmt: skip
        return {"vocab.csv": vocab_to_csv(self.vocab), **medians}

    # -- loaders -------------------------------------------------------------------------------------
    def _dataset(self, where: str | None, split: str, *, batch_size: int, remainder: str) -> ShardedCellDataset:
        h = self.hparams
        cache = {"cache_dir": self.cache_dir, "cache_bytes": h.cache_bytes} if self.cache_dir else {}
        train = split == h.train_split and where == self.path
        # train: the mix as configured; validation: every stream's cells once (no weights, no groups)
        source = where if where is not None else (self.streams if train else [s.path for s in self.streams])
        mix = {"num_samples": h.num_samples, "replacement": h.replacement, "weighting": h.weighting,
               "group_by": h.group_by} if train else {}  # fmt: skip
        try:
            return ShardedCellDataset(
                source,
                vocab=h.vocab_join,
                panels=h.panels,
                **mix,
                batch_size=batch_size,
                context_length=h.context_length,
                split=split,
                seed=h.seed,
                remainder=remainder,
                value_bins=h.value_bins,
                balance_tokens=h.balance_tokens and split == h.train_split,
                token_budget=h.token_budget if split == h.train_split else None,
                on_error=h.on_error,
                storage_options=self.storage_options,
                return_cell_ids=h.return_cell_ids,
                **cache,
            )
        except ShardError as exc:
            raise ConfigError(f"data: {exc}") from None

    def _loader(self, ds: ShardedCellDataset, persistent: bool) -> CellDataLoader:
        h = self.hparams
        extra = {"prefetch_factor": h.prefetch_factor} if h.prefetch_factor and h.num_workers else {}
        return CellDataLoader(ds, num_workers=h.num_workers, persistent_workers=persistent, **extra)

    def train_dataloader(self) -> CellDataLoader:
        h = self.hparams
        ds = self._dataset(self.path, h.train_split, batch_size=h.batch_size, remainder=h.remainder)
        self.train_loader = self._loader(ds, h.persistent_workers)
        return self.train_loader

    def val_dataloader(self) -> CellDataLoader | list:
        h = self.hparams
        if h.val_split is None:
            return []
        ds = self._dataset(
            self.val_path or self.path, h.val_split, batch_size=h.val_batch_size or h.batch_size, remainder="pad"
        )
        return self._loader(ds, h.persistent_workers)
