"""Callbacks: sampler epoch, throughput (``perf/*``), gradient norm (``train/grad_norm``,
``train/grad_clip_frac``).

Throughput times each step from ``on_train_batch_start`` to ``on_train_batch_end`` and the data wait
from the end of one step to the start of the next (that is where Lightning fetches the next batch).
On GPUs the marks are CUDA events, read once per logging window (no synchronization per step). MFU comes
from the FLOP formula of ``flops.py`` and the device's peak (``peak_tflops`` overrides the table).

Long because it holds the training run's callbacks, each short: the sampler epoch, throughput, the linear
probe and the history writer."""

from __future__ import annotations

import logging
import time
from typing import Any

import lightning.pytorch as pl
import torch

from ..model.flops import peak_flops, real_flops, train_flops

__all__ = ["GradNormMonitor", "SamplerEpoch", "ThroughputMonitor", "resume_line"]

log = logging.getLogger("training")


class SamplerEpoch(pl.Callback):
    """The epoch and position of the shard loader, in step with Lightning's loops.

    Before each training epoch the dataset is told the epoch: shards are re-permuted and rotated across
    ranks and masks change. The dataset keeps it in shared memory, so persistent workers see it
    (Lightning's own ``set_epoch`` reaches samplers only, not an ``IterableDataset``).

    When a checkpoint is written, two things are set right so that a resume from it continues exactly:

    - the saved loader position is the batches the training loop has *processed*: Lightning's fetcher
      pre-fetches one batch ahead, so the loader's own count is one ahead of the model;
    - a checkpoint written after the loop was stopped inside an epoch (``max_steps``, ``should_stop``: the
      ``last.ckpt`` of the end of ``fit``, written in ``on_train_epoch_end`` or ``on_train_end``) has its
      epoch counted as finished by Lightning, which would resume at the start of the *next* epoch and
      drop the rest of this one (different cells and masks from the first resumed step on). Its epoch
      progress is put back to "in the middle of the epoch", as a checkpoint written at that step's end
      says;
    - a checkpoint written when an epoch's data ran out (``is_last_batch``) resumes at the next epoch's
      first batch: the loader's saved position says so (on resume Lightning creates the loader's
      iterator before the epoch's start hook, which would otherwise pick up the finished epoch and
      serve nothing), and when Lightning had already closed the epoch (``on_train_end``) its batch
      progress is that of the next epoch's start (else the restored "last batch" ends it at once).

    On resume it says, in one line, what it resumed: the checkpoint, step, epoch, the batches of the
    epoch already served, and whether the loader's plan is exact or elastic.
    """

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        loader = trainer.train_dataloader
        dataset = getattr(loader, "dataset", None)
        if dataset is not None and hasattr(dataset, "set_epoch"):
            dataset.set_epoch(trainer.current_epoch)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        resumed = getattr(trainer.train_dataloader, "resumed", None)
        if trainer.ckpt_path and trainer.is_global_zero:
            log.info("%s", resume_line(str(trainer.ckpt_path), trainer.global_step, trainer.current_epoch, resumed))

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict) -> None:
        fit = checkpoint.get("loops", {}).get("fit_loop", {})
        batch, epochs = fit.get("epoch_loop.batch_progress"), fit.get("epoch_progress")
        if not batch or not epochs:
            return
        running = int(epochs["current"]["started"]) - 1  # the epoch the loop is in, or has just finished
        states = [s for s in fit.get("state_dict", {}).get("combined_loader") or [] if isinstance(s, dict)]
        states = [s for s in states if "batches" in s and s.get("epoch") == running]
        if batch.get("is_last_batch"):
            # its data ran out: a resume starts the next epoch at its first batch. Lightning creates the
            # loader's iterator before the epoch's start hook on resume, so the saved state must say so
            for state in states:
                state.update(epoch=running + 1, batches=0, stages=[])
            if epochs["total"]["completed"] == epochs["total"]["started"]:  # written after the epoch closed
                batch["current"] = dict.fromkeys(batch["current"], 0)
                batch["is_last_batch"] = False
            return
        if batch["current"]["processed"] > 0:  # stopped inside the epoch: it is not finished
            for key in ("total", "current"):
                epochs[key]["processed"] = epochs[key]["completed"] = epochs[key]["started"] - 1
        processed = int(trainer.fit_loop.epoch_loop.batch_progress.current.processed)
        for state in states:  # the batches the loop processed, not those the fetcher fetched ahead
            state["batches"] = min(int(state["batches"]), processed)


def resume_line(ckpt: str, step: int, epoch: int, resumed: Any) -> str:
    """The one line a resumed run starts with."""
    line = f"resuming from {ckpt}: step {step}, epoch {epoch}"
    if resumed is None:
        return line + "; the loader starts the epoch afresh (no loader state in the checkpoint)"
    line += f", {resumed.batches} batches of epoch {resumed.epoch} already served per rank; "
    if resumed.exact:
        return line + (
            f"the loader's plan is exact (world size {resumed.world_size}, {resumed.num_workers} workers per "
            f"rank, batch {resumed.batch_size}, as saved)"
        )
    return line + (
        f"the loader's plan is elastic: world size {resumed.saved_world_size} -> {resumed.world_size}, workers "
        f"{resumed.saved_num_workers} -> {resumed.num_workers}, batch {resumed.saved_batch_size} -> "
        f"{resumed.batch_size}; the rest of the epoch is re-planned over the cells not yet served"
    )


class _HostClock:
    """Step marks as host times (CPU devices: a step is done when the host returns from it)."""

    def mark(self) -> float:
        return time.perf_counter()

    @staticmethod
    def seconds(a: float, b: float) -> float:
        return b - a

    def settle(self, last: Any) -> None:
        """Nothing is pending on a CPU device."""


class _CudaClock:
    """Step marks as CUDA events on the current stream: timing costs no synchronization per step (the
    host may run ahead of the GPU and keep its queue full); the window's last mark is waited for once
    when the window is logged. A gap between one step's end event and the next one's start event is
    time the GPU had nothing queued: the data wait (and the device-side collate, which runs there)."""

    def mark(self) -> torch.cuda.Event:
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    @staticmethod
    def seconds(a: torch.cuda.Event, b: torch.cuda.Event) -> float:
        return a.elapsed_time(b) / 1000.0

    def settle(self, last: torch.cuda.Event) -> None:
        last.synchronize()


def _squares(batch: dict[str, Any]) -> torch.Tensor:
    """The sum over the batch's cells of each cell's length squared, on the batch's device (no sync):
    what attention would cost without pads."""
    if "segments" in batch:  # packed: a cell's length is its segment's token count
        seg = batch["segments"].reshape(-1)
        sizes = torch.zeros(batch["loss_weight"].shape[0], device=seg.device, dtype=torch.float64)
        sizes.index_add_(0, seg.clamp(min=0), (seg >= 0).to(torch.float64))
    else:
        sizes = batch["attention_mask"].sum(1).to(torch.float64)
    return (sizes * sizes).sum()


class ThroughputMonitor(pl.Callback):
    def __init__(
        self, log_every_n_steps: int | None = None, peak_tflops: float | None = None, warmup_steps: int = 2
    ) -> None:
        """
        Args:
            log_every_n_steps: window of steps averaged per log line (default: trainer.log_every_n_steps).
            peak_tflops: the device's peak TFLOP/s for MFU (default: from the table in ``flops.py``).
            warmup_steps: first steps left out of the summary (compilation, worker start).
        """
        self.every = log_every_n_steps
        self.peak = peak_tflops * 1e12 if peak_tflops else None
        self.warmup = warmup_steps
        self._clock: _HostClock | _CudaClock = _HostClock()
        self._end: Any = None
        self._reset()
        self.totals = {"cells": 0.0, "tokens": 0.0, "step": 0.0, "wait": 0.0, "steps": 0, "flops": 0.0}

    def _reset(self) -> None:
        # per step of the window: (start mark, end mark, previous end mark or None, counted in totals);
        # token counts stay device tensors until the window is logged (reading one is a sync)
        self.steps: list[tuple[Any, Any, Any, bool]] = []
        self.window = {"cells": 0.0, "slots": 0.0, "flops": 0.0, "counted_cells": 0.0, "counted_flops": 0.0}
        self.tokens: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, bool]] = []

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._clock = _CudaClock() if trainer.strategy.root_device.type == "cuda" else _HostClock()

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._end = None  # the first fetch of an epoch includes worker start-up: not a steady wait

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._end is not None:  # validation time is neither step time nor data wait
            self._end = self._clock.mark()

    def on_train_batch_start(self, trainer, pl_module, batch: dict[str, Any], batch_idx: int) -> None:
        self._start = self._clock.mark()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch: dict[str, Any], batch_idx: int) -> None:
        end = self._clock.mark()
        counted = trainer.global_step > self.warmup
        self.steps.append((self._start, end, self._end, counted))
        self._end = end
        world = trainer.world_size  # rank 0's batch stands for every rank's (they are balanced)
        mask = batch["attention_mask"]
        rows, length = mask.shape  # packed: several cells per row
        cells = batch["loss_weight"].shape[0]
        w = self.window
        flops = train_flops(pl_module.cfg, rows, length, 0, cells=cells) * world  # masked tokens' part: later
        w["cells"] += cells * world
        w["slots"] += rows * length * world
        w["flops"] += flops
        if counted:
            w["counted_cells"] += cells * world
            w["counted_flops"] += flops
        self.tokens.append((mask.sum(), (batch["labels"] >= 0).sum(), _squares(batch), counted))
        every = self.every or trainer.log_every_n_steps
        if len(self.steps) >= every:
            pl_module.log_dict(self._close(trainer, pl_module), on_step=True, on_epoch=False, rank_zero_only=True)
            self._reset()

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.steps:  # a last, partial window counts in the summary (Lightning logs nothing here)
            self._close(trainer, pl_module)
            self._reset()

    def _close(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, float]:
        """The window's figures, after one wait for its last step; the summary's totals advance."""
        clock, world = self._clock, trainer.world_size
        clock.settle(self.steps[-1][1])
        step = wait = counted_step = counted_wait = 0.0
        for start, end, before, counted in self.steps:
            s = clock.seconds(start, end)
            g = clock.seconds(before, start) if before is not None else 0.0
            step, wait = step + s, wait + g
            if counted:
                counted_step, counted_wait = counted_step + s, counted_wait + g
        counts = torch.stack([torch.stack([t, m, q]) for t, m, q, _ in self.tokens]).double().cpu()
        counted_rows = torch.tensor([c for *_, c in self.tokens], dtype=torch.bool)
        tokens, masked, squares = (counts.sum(0) * world).tolist()
        c_tokens, c_masked, _ = (counts[counted_rows].sum(0) * world).tolist() if counted_rows.any() else (0.0,) * 3
        head = train_flops(pl_module.cfg, 0, 0, 1)  # FLOPs per masked token (the output head)
        w = self.window
        t = self.totals
        t["cells"] += w["counted_cells"]
        t["tokens"] += c_tokens
        t["step"] += counted_step
        t["wait"] += counted_wait
        t["flops"] += w["counted_flops"] + head * c_masked
        t["steps"] += int(counted_rows.sum())
        elapsed = step + wait
        n = len(self.steps)
        computed = w["flops"] + head * masked
        out = {
            "perf/cells_per_sec": w["cells"] / elapsed,
            "perf/tokens_per_sec": tokens / elapsed,
            "perf/padding_frac": 1.0 - tokens / max(w["slots"], 1.0),
            "perf/pad_flops_frac": 1.0 - real_flops(pl_module.cfg, tokens, squares, masked, w["cells"]) / computed,
            "perf/step_time_ms": 1000.0 * elapsed / n,
            "perf/data_wait_frac": wait / elapsed,
        }
        peak = self._peak(trainer)
        if peak:
            out["perf/mfu"] = computed / elapsed / (peak * trainer.world_size)
        return out

    def _peak(self, trainer: pl.Trainer) -> float | None:
        if self.peak:
            return self.peak
        device = trainer.strategy.root_device
        if device.type != "cuda":
            return None
        return peak_flops(torch.cuda.get_device_name(device), trainer.precision)

    def summary(self) -> dict[str, float]:
        """Averages after the warm-up steps: cells/s, tokens/s, step time and data-wait share."""
        t = self.totals
        elapsed = t["step"] + t["wait"]
        if not t["steps"] or elapsed <= 0:
            return {}
        return {
            "cells_per_sec": t["cells"] / elapsed,
            "tokens_per_sec": t["tokens"] / elapsed,
            "step_time_ms": 1000 * elapsed / t["steps"],
            "data_wait_frac": t["wait"] / elapsed,
            "steps": t["steps"],
            "flops_per_sec": t["flops"] / elapsed,
        }


class GradNormMonitor(pl.Callback):
    """The global gradient norm before clipping and the share of steps whose norm exceeded the clip
    value. Under DeepSpeed the engine computes the norm over its partitions."""

    def __init__(self) -> None:
        self.steps = 0
        self.clipped = 0

    def on_before_optimizer_step(self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer) -> None:
        if _deepspeed_engine(trainer) is not None:
            return
        grads = [p.grad for p in pl_module.parameters() if p.grad is not None]
        if not grads:
            return
        norm = float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.float()) for g in grads])))
        self._record(trainer, pl_module, norm)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        engine = _deepspeed_engine(trainer)
        if engine is not None and engine.is_gradient_accumulation_boundary() is not None:
            norm = engine.get_global_grad_norm()
            if norm is not None:
                self._record(trainer, pl_module, float(norm))

    def _record(self, trainer: pl.Trainer, pl_module: pl.LightningModule, norm: float) -> None:
        clip = trainer.gradient_clip_val
        self.steps += 1
        self.clipped += int(bool(clip) and norm > float(clip))
        pl_module.log_dict(
            {"train/grad_norm": norm, "train/grad_clip_frac": self.clipped / self.steps},
            on_step=True,
            on_epoch=False,
            rank_zero_only=True,
        )


def _deepspeed_engine(trainer: pl.Trainer):
    return (
        getattr(trainer.strategy, "deepspeed_engine", None) if "DeepSpeed" in type(trainer.strategy).__name__ else None
    )
