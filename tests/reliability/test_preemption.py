"""Preemption, with real signals and real processes: a 2-rank ``torchrun`` job told to stop (SIGUSR1 to
one rank only, as a scheduler's notice may reach one node first; then SIGTERM to ``torchrun`` itself,
which forwards it to its ranks) stops every rank at the same step boundary, writes ``last.ckpt`` and
exits with the requeue status; ``--ckpt_path last`` continues, and every per-step loss equals the
uninterrupted run's."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import pytest
import torch

from tests.conftest import ROOT
from tests.training.test_training_runs import _args

STEPS = 24


def _cmd(data: Path, root: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node=2",
        "-m",
        "training",
        "fit",
        *_args(data, root, steps=STEPS),
        "--trainer.strategy",
        "ddp",
        "--data.val_split",
        "null",
        "--data.num_workers",
        "1",
        "--trainer.callbacks+=tests.training.helpers.StepFile",
        "--trainer.callbacks.path",
        str(root / "step.txt"),
        *extra,
    ]


def _run_until(cmd: list[str], root: Path, step: int, send) -> int:
    """Start the job, wait until rank 0 finished ``step`` steps, ``send(torchrun process)``, wait."""
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 300
    flag = root / "step.txt"
    while time.monotonic() < deadline and proc.poll() is None:
        if flag.exists() and flag.read_text().strip().isdigit() and int(flag.read_text()) >= step:
            send(proc)
            break
        time.sleep(0.05)
    out = proc.communicate(timeout=300)[0]
    assert "stopped after step" in out, out[-4000:]
    return proc.returncode


def _to_rank(rank: int, sig: int):
    def send(proc: subprocess.Popen) -> None:
        for child in psutil.Process(proc.pid).children(recursive=True):
            try:
                if child.environ().get("RANK") == str(rank) and "training" in " ".join(child.cmdline()):
                    os.kill(child.pid, sig)
                    return
            except psutil.Error:
                continue
        raise AssertionError(f"no rank {rank} process under torchrun")

    return send


def _losses(root: Path) -> pd.Series:
    return pd.read_csv(root / "history.csv").set_index("step")["train/loss"].dropna()


@pytest.mark.slow
def test_signals_stop_every_rank_at_one_step_and_the_run_continues_exactly(zarr_set, tmp_path):
    full, run = tmp_path / "full", tmp_path / "run"
    subprocess.run(_cmd(zarr_set, full), cwd=ROOT, check=True, capture_output=True, timeout=600)
    code = _run_until(_cmd(zarr_set, run), run, 5, _to_rank(1, signal.SIGUSR1))
    assert code != 0  # each rank exits 75: torchrun reports the job as failed, to be run again
    first = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["global_step"]
    assert 5 <= first < STEPS
    code = _run_until(
        _cmd(zarr_set, run, "--ckpt_path", "last"), run, first + 5, lambda proc: proc.send_signal(signal.SIGTERM)
    )
    second = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["global_step"]
    assert first + 5 <= second < STEPS
    subprocess.run(_cmd(zarr_set, run, "--ckpt_path", "last"), cwd=ROOT, check=True, capture_output=True, timeout=600)
    a, b = _losses(full), _losses(run)
    assert list(b.index) == list(range(STEPS)) == list(a.index)
    assert np.array_equal(a.to_numpy(), b.to_numpy())  # all 24 steps, across two preemptions
