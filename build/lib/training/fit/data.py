"""``CellDataModule``: the streaming stage as a ``LightningDataModule`` (config keys ``data.*``).

The ``data`` section is the loader's own ``LoaderConfig`` (every keyword argument beyond the few
below is forwarded to it, so ``--data.batch_size``, its help and its checks come from one place) plus
what a training run adds: which shard sets (``path`` or ``streams``), which splits, the DataLoader's
workers. Train batches come from ``CellDataLoader`` (torchdata's StatefulDataLoader with a
rank-independent state): Lightning's fit loop saves that state in the checkpoint and loads it back on
resume, so a resumed run continues with the next batch. The validation loader pads the remainder
(padded repeats weigh 0), keeps epoch 0 (the same masks at every validation) and so scores every val
cell once.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import lightning.pytorch as pl

from shards import CellDataLoader, ShardedCellDataset, ShardError
from shards.format.vocab import Vocabulary, vocab_to_csv
from shards.loading.collate import Collator
from shards.loading.config import LoaderConfig
from shards.loading.device import DeviceCollator
from shards.loading.panels import PanelFilter
from shards.loading.readers import ShardSetReader
from shards.loading.streams import MultiReader
from shards.plan.mixing import Stream
from shards.storage.remote import redact, redact_options

from ..errors import ConfigError

__all__ = ["CREDENTIAL_KEYS", "CellDataModule", "plain"]

#: ``data.*`` keys that may hold credentials (URLs, storage options): redacted wherever they are written
CREDENTIAL_KEYS = ("path", "val_path", "streams", "storage_options", "cache_dir")


def plain(value: Any) -> Any:
    """Config values as plain data (dataclasses as dicts): what hyperparameter files and checkpoints hold."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {k: plain(v) for k, v in dataclasses.asdict(value).items()}
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


class CellDataModule(pl.LightningDataModule):
    def __init__(
        self,
        path: str | None = None,
        streams: list[Stream] | None = None,
        train_split: str = "train",
        val_split: str | None = "val",
        val_path: str | None = None,
        val_batch_size: int | None = None,
        num_workers: int = 2,
        persistent_workers: bool = True,
        prefetch_factor: int | None = None,
        **loader: Any,
    ) -> None:
        """
        Args:
            path: the shard set (directory or URL) to train on (or give ``streams``).
            streams: several shard sets mixed per epoch instead of ``path``: a list of
                ``{path, weight | repeat | choose, split, name}`` (validation then reads every stream's
                ``val_split``, unweighted).
            train_split: the split to train on.
            val_split: the split of ``path`` to validate on; null turns validation off.
            val_path: a separate shard set for validation (its ``val_split`` is used).
            val_batch_size: cells per validation batch (default: batch_size).
            num_workers: DataLoader worker processes per rank (spawned).
            persistent_workers: keep workers between epochs.
            prefetch_factor: batches prefetched per worker.
            **loader: the loader's options (``shards.LoaderConfig``).
        """
        super().__init__()
        self.path, self.val_path = path, val_path
        self.train_split, self.val_split, self.val_batch_size = train_split, val_split, val_batch_size
        self.num_workers, self.persistent_workers, self.prefetch_factor = (
            num_workers,
            persistent_workers,
            prefetch_factor,
        )
        try:  # the loader's own checks first: before anything is read or written
            self.config = LoaderConfig(**loader)
        except ShardError as exc:
            raise ConfigError(f"data.{exc}") from None
        except TypeError as exc:
            raise ConfigError(f"data: {exc}") from None
        cfg = self.config
        args = {
            "path": path,
            "streams": streams,
            "train_split": train_split,
            "val_split": val_split,
            "val_path": val_path,
            "val_batch_size": val_batch_size,
            "num_workers": num_workers,
            "persistent_workers": persistent_workers,
            "prefetch_factor": prefetch_factor,
        }
        values = {**args, **{name: getattr(cfg, name) for name in LoaderConfig.field_names()}}
        # what is logged and checkpointed is plain data without credentials; the loaders use the attributes
        self.save_hyperparameters(
            {k: redact_options(plain(v)) if k in CREDENTIAL_KEYS else plain(v) for k, v in values.items()}
        )
        if (path is None) == (streams is None):
            raise ConfigError("data: give data.path (one shard set) or data.streams (several), exactly one")
        where = f"data.path={redact(path)!r}" if path is not None else "data.streams"
        try:
            self.streams = [Stream.parse(s, f"data.streams[{i}]") for i, s in enumerate(streams or [])]
            self.reader = MultiReader(
                self.streams or [Stream(path)],
                train_split,
                vocab_join=cfg.vocab_join,
                storage_options=cfg.storage_options,
            )
            self.vocab: Vocabulary = self.reader.vocab()
            if cfg.panels is not None:
                PanelFilter.build(cfg.panels, self.vocab, cfg.seed)
        except (ShardError, FileNotFoundError) as exc:
            raise ConfigError(f"{where}: {exc}; point it at shard sets from `ingest build`") from None
        self._check_columns()
        self._check_validation(streams)
        if num_workers < 0:
            raise ConfigError(f"data.num_workers={num_workers}: must be 0 (in process) or more")
        if val_batch_size is not None and val_batch_size < 1:
            raise ConfigError(f"data.val_batch_size={val_batch_size}: must be at least 1")
        self.train_loader: CellDataLoader | None = None
        self._loaders: list[CellDataLoader] = []  # every loader made, for shutdown_loaders
        #: pads and masks ragged batches on the device (``collate_on: device``; validation batches too:
        #: they differ from training ones in the cells and the epoch, which the batch carries)
        self.device_collator = DeviceCollator.like(
            Collator(self.vocab, cfg.context_length, cfg.seed, value_bins=cfg.value_bins)
        )

    def _check_columns(self) -> None:
        """Weighting and grouping columns exist in every stream: checked now, before the run writes anything."""
        cfg = self.config
        column = cfg.weighting.column if cfg.weighting is not None else None
        for key, name in (("data.weighting.column", column), ("data.group_by", cfg.group_by)):
            for reader in self.reader.readers if name else []:
                try:
                    reader.column(0, name)
                except ShardError as exc:
                    raise ConfigError(f"{key}={name!r}: {exc}") from None

    def _check_validation(self, streams: list | None) -> None:
        cfg, val_split = self.config, self.val_split
        if streams is not None and val_split is not None and self.val_path is None:
            try:  # validation reads every stream's val split, unweighted
                MultiReader(self.streams, val_split, vocab_join=cfg.vocab_join, storage_options=cfg.storage_options)
            except ShardError as exc:
                raise ConfigError(
                    f"data.val_split={val_split!r}: {exc}; set data.val_path, or null to skip validation"
                ) from None
        elif val_split is not None:
            where = self.val_path or self.path
            try:
                val_reader = ShardSetReader(where, val_split, storage_options=cfg.storage_options)
            except ShardError as exc:
                raise ConfigError(
                    f"data.val_split={val_split!r} (data.val_path={redact_options(self.val_path)!r}): {exc}; "
                    "set data.val_split to a split of the set, or null to skip validation"
                ) from None
            if val_reader.manifest.vocab.sha256 != self.vocab_sha256:
                raise ConfigError(
                    f"data.val_path={redact_options(self.val_path)!r}: its vocabulary differs from data.path's; "
                    f"build it with `ingest build --vocab {redact(self.path)}/vocab.csv`"
                )

    # -- what the model and checkpoints need from the data -------------------------------------------
    @property
    def vocab_size(self) -> int:
        return self.vocab.size

    @property
    def vocab_sha256(self) -> str:
        return self.reader.vocab_sha256()

    @property
    def context_length(self) -> int:
        return self.config.context_length

    def side_files(self) -> dict[str, bytes]:
        """``vocab.csv`` and ``gene_medians.csv`` of the shard set, to be copied beside checkpoints. With
        a remapped vocabulary: the joint ``vocab.csv`` and each stream's ``gene_medians.<stream>.csv``."""
        readers = self.reader.readers
        if self.reader.vocab_mode == "same":
            return {readers[0].manifest.file(k).file: readers[0].read_file(k) for k in ("vocab", "gene_medians")}
        names = self.reader.names
        medians = {f"gene_medians.{n}.csv": r.read_file("gene_medians") for n, r in zip(names, readers, strict=True)}
        return {"vocab.csv": vocab_to_csv(self.vocab), **medians}

    # -- loaders -------------------------------------------------------------------------------------
    def _dataset(self, where: str | None, split: str, *, batch_size: int, remainder: str) -> ShardedCellDataset:
        cfg = self.config
        train = split == self.train_split and where == self.path
        # train: the mix as configured; validation: every stream's cells once (no weights, no groups)
        source = where if where is not None else (self.streams if train else [s.path for s in self.streams])
        options: dict[str, Any] = {"batch_size": batch_size, "remainder": remainder}
        if not train:
            options.update(
                num_samples=None,
                replacement=False,
                weighting=None,
                group_by=None,
                group_pool_cells=None,
                group_exact=False,
            )
        if split != self.train_split:
            options.update(balance_tokens=False, token_budget=None)
        config = dataclasses.replace(cfg, **options)
        try:
            return ShardedCellDataset(source, split, config)
        except ShardError as exc:
            raise ConfigError(f"data: {exc}") from None

    def _loader(self, ds: ShardedCellDataset, persistent: bool) -> CellDataLoader:
        extra: dict[str, Any] = {}
        if self.prefetch_factor and self.num_workers:
            extra["prefetch_factor"] = self.prefetch_factor
        if self.trainer is not None and self.trainer.strategy.root_device.type == "cuda":
            extra["pin_memory"] = True  # page-locked batches: the copy to the GPU runs non_blocking
        # unsized for Lightning, which would read the length once and end every epoch on it
        loader = CellDataLoader(ds, num_workers=self.num_workers, persistent_workers=persistent, sized=False, **extra)
        self._loaders.append(loader)
        return loader

    def _require_batches(self, ds: ShardedCellDataset, epoch: int, batch_key: str = "batch_size") -> None:
        """Refuse a loader whose epoch plans no batch on this rank (every rank plans the same count, so
        every rank refuses together): Lightning would loop over empty epochs for ever."""

        def spell(name: str) -> str:
            return f"data.{batch_key if name == 'batch_size' else name}"

        try:
            ds.require_batches(self.num_workers, epoch, spell)
        except ShardError as exc:
            raise ConfigError(str(exc)) from None

    def train_dataloader(self) -> CellDataLoader:
        cfg = self.config
        ds = self._dataset(self.path, self.train_split, batch_size=cfg.batch_size, remainder=cfg.remainder)
        epoch = self.trainer.current_epoch if self.trainer is not None else 0
        self._require_batches(ds, epoch)
        self.train_loader = self._loader(ds, self.persistent_workers)
        return self.train_loader

    def shutdown_loaders(self) -> None:
        """Stop the worker processes of every loader this module made (persistent ones too)."""
        for loader in self._loaders:
            loader.shutdown_workers()
        self._loaders = []

    def val_dataloader(self) -> CellDataLoader | list:
        if self.val_split is None:
            return []
        batch_size = self.val_batch_size or self.config.batch_size
        ds = self._dataset(self.val_path or self.path, self.val_split, batch_size=batch_size, remainder="pad")
        self._require_batches(ds, 0, "val_batch_size" if self.val_batch_size else "batch_size")
        return self._loader(ds, self.persistent_workers)
