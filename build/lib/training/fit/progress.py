"""The training progress bar, counting optimizer steps toward ``trainer.max_steps``.

Runs are step-limited (``max_epochs: -1``) and the training loaders are unsized (epochs end on the
data), so Lightning's own bar shows ``Epoch 0/-2`` and a batch count with no total. This one shows the
epoch without a bogus bound and a bar of ``global_step / max_steps`` that goes on across epochs and
resumes where the checkpoint left off.
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import RichProgressBar

__all__ = ["StepProgressBar", "train_description"]


def train_description(epoch: int, max_epochs: int | None, step: int, max_steps: int) -> str:
    """``Epoch 3`` (``Epoch 3/9`` when epochs bound the run), and the steps when steps bound it."""
    text = f"Epoch {epoch}" + (f"/{max_epochs - 1}" if max_epochs is not None and max_epochs > 0 else "")
    return text + (f" · step {step}/{max_steps}" if max_steps > 0 else "")


class StepProgressBar(RichProgressBar):
    """Rich's bar, with steps for a step-limited run (``max_steps > 0``)."""

    def _steps(self) -> int:
        return int(self.trainer.max_steps) if self.trainer.max_steps and self.trainer.max_steps > 0 else 0

    @property
    def total_train_batches(self) -> int | float:
        return self._steps() or super().total_train_batches

    def _get_train_description(self, current_epoch: int) -> str:
        t = self.trainer
        return train_description(current_epoch, t.max_epochs, int(t.global_step), self._steps())

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_epoch_start(trainer, pl_module)
        if self._steps():
            self._update(self.train_progress_bar_id, int(trainer.global_step))

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if not self._steps():
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
            return
        if not self.is_disabled and self.train_progress_bar_id is None:
            self._initialize_train_progress_bar_id()
        if self.progress is not None and self.train_progress_bar_id is not None:
            description = self._get_train_description(trainer.current_epoch)
            self.progress.update(self.train_progress_bar_id, description=description)
        self._update(self.train_progress_bar_id, int(trainer.global_step))
        self._update_metrics(trainer, pl_module)
        self.refresh()
