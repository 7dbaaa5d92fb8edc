"""Nothing waits forever: scripts that use the loader with worker processes end, or fail within seconds
with the cause, however they are written. Real processes, real spawned workers."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import pytest

from tests.conftest import ROOT


def _run_script(tmp_path, body: str, timeout: float = 120) -> tuple[subprocess.CompletedProcess, float]:
    script = tmp_path / "user_script.py"
    script.write_text(textwrap.dedent(body))
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=tmp_path,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )
    return proc, time.perf_counter() - t0


@pytest.mark.slow
def test_a_script_ending_with_live_persistent_workers_exits(zarr_set, tmp_path):
    """Workers ignore SIGTERM (a scheduler's signal is for the main process to act on), so the
    ``multiprocessing`` exit hook, which terminates and joins them, would wait forever: the loader
    stops its workers at exit first."""
    proc, _ = _run_script(
        tmp_path,
        f"""
        from shards import CellDataLoader, ShardedCellDataset

        if __name__ == "__main__":
            ds = ShardedCellDataset({str(zarr_set)!r}, batch_size=16, context_length=64)
            loader = CellDataLoader(ds, num_workers=2, persistent_workers=True)
            for i, batch in enumerate(loader):
                if i == 3:
                    break  # a live iterator, workers waiting for more work
            print("done", flush=True)
        """,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "done"


@pytest.mark.slow
def test_a_script_without_main_guard_fails_at_once_naming_it(zarr_set, tmp_path):
    """The README's loader example pasted into a plain script: spawned workers re-run the script and
    die; the main process hung in multiprocessing's start-up write. Now it stops before any worker
    starts, naming the line and the guard."""
    proc, seconds = _run_script(
        tmp_path,
        f"""
        from shards import CellDataLoader, ShardedCellDataset

        ds = ShardedCellDataset({str(zarr_set)!r}, batch_size=16, context_length=64)
        loader = CellDataLoader(ds, num_workers=2)
        for batch in loader:
            pass
        """,
        timeout=60,
    )
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert "user_script.py, line 6" in last and 'if __name__ == "__main__":' in last, proc.stderr[-2000:]
    assert seconds < 30


@pytest.mark.slow
def test_a_worker_that_dies_while_starting_raises_within_seconds(zarr_set, tmp_path):
    """Any death during start-up (here: the main module exits when a spawned child imports it) made
    the parent block for ever writing the worker's start-up data; the watchdog turns it into an error."""
    proc, seconds = _run_script(
        tmp_path,
        f"""
        import functools
        import os

        from shards import CellDataLoader, ShardedCellDataset

        if __name__ == "__mp_main__":
            os._exit(3)  # a spawned child dies while importing the main module

        if __name__ == "__main__":
            ds = ShardedCellDataset({str(zarr_set)!r}, batch_size=16, context_length=64)
            # start-up data larger than a pipe's buffer (a big vocabulary's dataset is ~400 KB)
            init = functools.partial(print, b"x" * 1_000_000)
            loader = CellDataLoader(ds, num_workers=2, worker_init_fn=init)
            try:
                next(iter(loader))
            except Exception as e:
                print(type(e).__name__, e, flush=True)
                raise SystemExit(1)
            print("no error", flush=True)
        """,
        timeout=90,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr[-2000:]
    assert proc.stdout.startswith("WorkerStartupError a DataLoader worker (pid"), proc.stdout
    assert "died while starting" in proc.stdout
    assert seconds < 60


@pytest.mark.slow
def test_a_rank_that_dies_without_restarts_stops_the_job_within_seconds(zarr_set, tmp_path):
    """torchrun without ``--max-restarts``: a rank SIGKILLed mid-step (the other waits in an all-reduce)
    ends the whole job with a non-zero exit, seconds after the death, naming the failed rank."""

    from tests.training.test_training_runs import _args

    stamp = tmp_path / "killed-at"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]
    cmd += ["--monitor-interval=0.5", "-m", "training", "fit", *_args(zarr_set, tmp_path / "run", steps=30)]
    cmd += ["--trainer.strategy", "ddp", "--data.val_split", "null", "--data.num_workers", "0"]
    cmd += ["--trainer.callbacks+=tests.training.helpers.KillAt", "--trainer.callbacks.step", "3"]
    cmd += ["--trainer.callbacks.rank", "1", "--trainer.callbacks.stamp", str(stamp)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    ended = time.time()
    assert proc.returncode != 0 and stamp.exists(), proc.stderr[-3000:]
    assert ended - float(stamp.read_text()) < 20, proc.stderr[-3000:]
    assert "local_rank: 1" in proc.stderr and "Signal 9 (SIGKILL)" in proc.stderr, proc.stderr[-3000:]
