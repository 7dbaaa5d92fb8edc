"""Test helpers for real training runs (importable from the repository root as ``tests.training.helpers``).

``DumpParams`` is a callback given to the real CLI (``--trainer.callbacks+=...``): every rank writes
its parameters after training, so a test can compare ranks. ``UnionDataModule`` serves, at each step,
the cells that ranks 0..W-1 of a W-rank run get at that step, concatenated: a single process then
computes the same global batch as the W-rank run (the reference for DDP/DeepSpeed equivalence).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import lightning.pytorch as pl
import torch
from torch.utils.data import IterableDataset

from shards import ShardedCellDataset
from training.fit.data import CellDataModule


class DumpParams(pl.Callback):
    def __init__(self, out_dir: str) -> None:
        self.out_dir = out_dir

    def _dump(self, trainer: pl.Trainer, pl_module: pl.LightningModule, name: str) -> None:
        params = {k: v.detach().float().cpu().clone() for k, v in pl_module.model.state_dict().items()}
        Path(self.out_dir).mkdir(parents=True, exist_ok=True)
        torch.save(params, Path(self.out_dir) / f"{name}-rank{trainer.global_rank}.pt")

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._dump(trainer, pl_module, "init")

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._dump(trainer, pl_module, "params")


def _attempt() -> int:
    """torchrun's restart count (0 on the first attempt, or outside torchrun)."""
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))


class RecordCells(pl.Callback):
    """Every rank appends, after each optimizer step, ``{step, epoch, cells}`` (the cells it trained on:
    loss weight > 0) to ``cells-rank<R>-attempt<A>.jsonl``. Needs ``--data.return_cell_ids true``."""

    def __init__(self, out_dir: str) -> None:
        self.out_dir = out_dir

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch, batch_idx):
        cells = [c for c, w in zip(batch["cell_id"], batch["loss_weight"].tolist(), strict=True) if w > 0]
        path = Path(self.out_dir) / f"cells-rank{trainer.global_rank}-attempt{_attempt()}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as fh:
            fh.write(json.dumps({"step": trainer.global_step, "epoch": trainer.current_epoch, "cells": cells}) + "\n")


class KillAt(pl.Callback):
    """SIGKILL this rank right after optimizer step ``step`` on the first attempt (a crashed node)."""

    def __init__(self, step: int, rank: int, stamp: str | None = None) -> None:
        self.step, self.rank, self.stamp = step, rank, stamp

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch, batch_idx):
        if trainer.global_step == self.step and trainer.global_rank == self.rank and _attempt() == 0:
            if self.stamp:  # when the rank died (wall clock), for tests of how fast the others stop
                Path(self.stamp).write_text(repr(time.time()))
            os.kill(os.getpid(), signal.SIGKILL)


class UnionDataset(IterableDataset):
    def __init__(self, parts: list[ShardedCellDataset], pad_id: int) -> None:
        self.parts, self.pad_id = parts, pad_id

    def set_epoch(self, epoch: int) -> None:
        for p in self.parts:
            p.set_epoch(epoch)

    def __iter__(self):
        for batches in zip(*self.parts, strict=True):
            width = max(b["input_ids"].shape[1] for b in batches)
            fill = {"input_ids": self.pad_id, "attention_mask": False, "labels": -100, "values": 0}
            out = {}
            for key in batches[0]:
                if batches[0][key].dim() == 2:
                    out[key] = torch.cat(
                        [
                            torch.nn.functional.pad(b[key], (0, width - b[key].shape[1]), value=fill[key])
                            for b in batches
                        ]
                    )
                else:
                    out[key] = torch.cat([b[key] for b in batches])
            yield out


class UnionDataModule(CellDataModule):
    def __init__(self, *args, world: int = 2, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.world = world

    def train_dataloader(self):
        h = self.hparams
        parts = [
            ShardedCellDataset(
                self.path,
                batch_size=h.batch_size,
                context_length=h.context_length,
                seed=h.seed,
                value_bins=h.value_bins,
                rank=r,
                world_size=self.world,
            )
            for r in range(self.world)
        ]
        return torch.utils.data.DataLoader(UnionDataset(parts, self.vocab.pad_id), batch_size=None)

    def val_dataloader(self):
        return []


def reference_run(argv: list[str], world: int) -> None:
    """Fit one process on the union of ``world`` ranks' batches, with the CLI's config otherwise."""
    from training.fit.cli import CellshardCLI
    from training.fit.history import write_history

    sys.argv = sys.argv[:1]  # LightningCLI warns when args and a command line are both given
    cli = CellshardCLI(args=argv, run=False)
    h = cli.datamodule.hparams
    dm = UnionDataModule(
        h.path,
        val_split=None,
        batch_size=h.batch_size,
        context_length=h.context_length,
        num_workers=0,
        seed=h.seed,
        value_bins=h.value_bins,
        world=world,
    )
    cli.trainer.fit(cli.model, datamodule=dm)
    write_history(cli.trainer)


if __name__ == "__main__":
    reference_run(sys.argv[2:], int(sys.argv[1]))


class SignalAt(pl.Callback):
    """Send this process ``signal`` right after optimizer step ``step`` (as a scheduler's preemption
    notice would arrive), on global rank ``rank`` only (-1: every rank), on the first attempt only."""

    def __init__(self, step: int, signal: str = "SIGUSR1", rank: int = -1) -> None:
        self.step, self.signal, self.rank = step, signal, rank

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch, batch_idx):
        if trainer.global_step == self.step and self.rank in (-1, trainer.global_rank) and _attempt() == 0:
            os.kill(os.getpid(), getattr(signal, self.signal))


class StepFile(pl.Callback):
    """Global rank 0 writes the number of finished optimizer steps to ``path`` after each step (a test
    waits on it to send a signal mid-run)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch, batch_idx):
        if trainer.is_global_zero:
            Path(self.path).write_text(str(trainer.global_step))


class PhaseFile(pl.Callback):
    """Global rank 0 writes the phase it is in to ``path`` (a test waits on it to send a signal there):
    ``setup``, ``sanity``, ``step N`` (after optimizer step N), ``val N`` (in a validation pass after step
    N) and ``save N`` (inside a checkpoint write). In validation and checkpoint writes it then waits
    ``pause`` seconds, so that the signal lands inside that phase, not after it."""

    def __init__(self, path: str, pause: float = 1.0) -> None:
        self.path, self.pause = path, pause

    def _write(self, trainer: pl.Trainer, text: str, pause: bool = False) -> None:
        if trainer.is_global_zero:
            Path(self.path).write_text(text)
            if pause:
                time.sleep(self.pause)

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._write(trainer, "setup")

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        where = "sanity" if trainer.sanity_checking else f"val {trainer.global_step}"
        self._write(trainer, where, pause=batch_idx == 0)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch, batch_idx):
        self._write(trainer, f"step {trainer.global_step}")

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict) -> None:
        self._write(trainer, f"save {trainer.global_step}", pause=True)
