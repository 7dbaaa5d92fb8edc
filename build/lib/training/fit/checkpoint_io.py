"""Checkpoints written atomically: a file appears under its name only once it is complete.

Lightning's ``TorchCheckpointIO`` writes a checkpoint's bytes straight to its final name, so a job
killed mid-write (a preemption that does not wait, a full disk) leaves a truncated ``last.ckpt`` that
the next ``--ckpt_path last`` would try to load. Here a local checkpoint is written to a temporary
sibling, flushed to disk and renamed over the target (``shards.storage.atomic``); remote paths keep
Lightning's writer. DeepSpeed writes its own checkpoint directories and does not use this.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from shards.storage.atomic import atomic_file

__all__ = ["AtomicCheckpointIO"]


class AtomicCheckpointIO(TorchCheckpointIO):
    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        target = str(path)
        if "://" in target and not target.startswith("file://"):
            return super().save_checkpoint(checkpoint, path, storage_options)
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options for local checkpoints")
        target_path = Path(target.removeprefix("file://"))
        target_path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_file(target_path) as tmp, open(tmp, "wb") as fh:
            torch.save(checkpoint, fh)
        return None
