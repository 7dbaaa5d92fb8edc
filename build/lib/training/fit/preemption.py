"""Preemption: SIGTERM or SIGUSR1 stop every rank at the same step boundary, with a resumable checkpoint.

Ctrl-C (SIGINT) is handled the same way (a second Ctrl-C stops at once, without a checkpoint): a
KeyboardInterrupt raised at an arbitrary point of a step can leave a loader's queues and locks half-way,
and a run then hung at exit under load; a stop at the step boundary ends cleanly, exit 130.

SLURM sends SIGTERM (or ``--signal=USR1@SECONDS``) before a time limit or a preemption; cloud spot
notices become the same signals. Lightning's own handling either raises mid-step from rank 0's view
alone (SIGTERM) or writes an HPC checkpoint from inside the signal handler (SLURM's SIGUSR1); neither
is a step boundary every rank agrees on. Here the handler only records the signal; after each
optimizer step the ranks agree (an all-reduce of the flag, so a rank that got the signal a step later
still stops with the others; it runs on a CPU process group of gloo, so on GPUs the vote costs no
host-device synchronisation: the flag never leaves the host), all of them write ``last.ckpt``
together (atomically, through ``checkpoint_io.AtomicCheckpointIO``), training stops, and the CLI
exits with ``REQUEUE_EXIT`` (75, ``EX_TEMPFAIL``: "try again"). Under SLURM rank 0 also requeues
the job (``scontrol requeue``, as Lightning's auto-requeue does). ``--ckpt_path last`` then continues exactly.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
import torch.distributed as dist

__all__ = ["INTERRUPT_EXIT", "REQUEUE_EXIT", "Preemption"]

log = logging.getLogger("training")

#: the exit status of a preempted run (``EX_TEMPFAIL``): the checkpoint is written, run again to continue
REQUEUE_EXIT = 75
SIGNALS = ("SIGTERM", "SIGUSR1", "SIGINT")
#: the exit status of a run stopped by Ctrl-C (SIGINT) at a step boundary: 128 + SIGINT, as shells report it
INTERRUPT_EXIT = 130


def _slurm_job() -> str | None:
    """The SLURM job to requeue (array jobs as ``<job>_<task>``), or None outside a SLURM batch job."""
    if os.environ.get("SLURM_JOB_NAME") in ("bash", "interactive"):
        return None
    array = os.environ.get("SLURM_ARRAY_JOB_ID")
    if array is not None and os.environ.get("SLURM_ARRAY_TASK_ID") is not None:
        return f"{array}_{os.environ['SLURM_ARRAY_TASK_ID']}"
    return os.environ.get("SLURM_JOB_ID")


class Preemption(pl.Callback):
    def __init__(self, signals: tuple[str, ...] = SIGNALS) -> None:
        """
        Args:
            signals: the signals that mean "stop at the next step boundary and checkpoint".
        """
        self.signals = [getattr(signal, name) for name in signals]
        self.received = 0  # the signal number, set by the handler (nothing else happens there)
        self.stopped_at: int | None = None  # the global step after which the run stopped
        self.stop_signal = 0  # the signal the ranks agreed on
        self.checkpoint: Path | None = None
        self._previous: dict[int, Any] = {}
        self._group: Any = None  # the CPU (gloo) group the ranks vote in

    def _handle(self, signum: int, frame: Any) -> None:
        if signum == signal.SIGINT and self.received == signal.SIGINT:  # Ctrl-C twice: stop now, unsaved
            signal.default_int_handler(signum, frame)
        self.received = self.received or signum

    @property
    def exit_status(self) -> int:
        """What the CLI exits with after this callback stopped the run: 130 for Ctrl-C, 75 (requeue) else."""
        return INTERRUPT_EXIT if self.stop_signal == signal.SIGINT else REQUEUE_EXIT

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # after Lightning registered its own handlers (at the start of fit): ours replace them
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in self.signals}
        if trainer.world_size > 1 and dist.is_available() and dist.is_initialized():
            # every rank calls this at the same point (a collective); a gloo default group is used as it is
            self._group = None if dist.get_backend() == "gloo" else dist.new_group(backend="gloo")

    def _vote(self, trainer: pl.Trainer) -> int:
        """The signal any rank received (0: none), the same on every rank, read on the host."""
        flag = self.received
        if trainer.world_size > 1 and dist.is_available() and dist.is_initialized():
            votes = torch.tensor([flag], dtype=torch.int64)  # on the CPU: no device sync to read it
            dist.all_reduce(votes, op=dist.ReduceOp.MAX, group=self._group)
            flag = int(votes[0])
        return flag

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous = {}
        if self._group is not None:
            dist.destroy_process_group(self._group)
            self._group = None

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch, batch_idx) -> None:
        if self.stopped_at is not None:
            return
        flag = self._vote(trainer)
        if not flag:
            return
        self.stopped_at = trainer.global_step
        self.stop_signal = flag
        ckpt = trainer.checkpoint_callback
        directory = Path(ckpt.dirpath) if ckpt is not None and ckpt.dirpath else Path(trainer.default_root_dir)
        self.checkpoint = directory / "last.ckpt"
        trainer.save_checkpoint(self.checkpoint)  # on every rank: sharded strategies gather or write their part
        # Lightning runs a validation pass when ``should_stop`` is set (for early stopping), whatever the
        # schedule: it would delay the stop by a whole pass, log a val loss the uninterrupted run does not
        # have, and let ModelCheckpoint overwrite last.ckpt mid-step (its loop state then resumes with the
        # step labels one behind). The run ends here, so validation is switched off for its remainder.
        trainer.limit_val_batches = 0
        trainer.should_stop = True
        if trainer.is_global_zero:
            name = signal.Signals(flag).name
            log.warning(
                "%s: stopped after step %d and wrote %s; run again with --ckpt_path last to continue exactly (exit %d)",
                name,
                self.stopped_at,
                self.checkpoint,
                self.exit_status,
            )
            job = _slurm_job() if flag != signal.SIGINT else None  # Ctrl-C is the user's stop, not a preemption
            if job is not None:
                self._requeue(job)

    @staticmethod
    def _requeue(job: str) -> None:
        try:
            result = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as exc:
            log.warning("could not requeue SLURM job %s (%s); resubmit it with --ckpt_path last", job, exc)
            return
        if result.returncode == 0:
            log.warning("requeued SLURM job %s", job)
        else:
            reason = result.stderr.strip()
            log.warning("scontrol requeue %s failed (%s); resubmit it with --ckpt_path last", job, reason)
