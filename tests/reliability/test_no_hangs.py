"""Nothing waits forever: scripts that use the loader with worker processes end, or fail within seconds
with the cause, however they are written. Real processes, real spawned workers."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

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


@pytest.fixture(scope="module")
def big_vocab_set(tmp_path_factory) -> Path:
    """A set with a ~60,000-gene vocabulary (human and mouse genomes together are of that size)."""
    from ingest import SynthSpec, synthesize
    from tests.conftest import small_build

    root = tmp_path_factory.mktemp("bigvocab")
    written = synthesize(SynthSpec(cells=300, genes=80000, datasets=1, files=1, seed=5), root / "b.h5ad")
    small_build([p for p, _ in written], root / "set", format="zarr")
    return root / "set"


def test_what_a_worker_unpickles_is_small_whatever_the_vocabulary(big_vocab_set):
    """The dataset a spawned worker receives is a spec (paths, options, position), not the opened set:
    under a pipe's 64 KB buffer, so the parent's start-up write never blocks on a dead child."""
    import pickle

    from shards import ShardedCellDataset

    ds = ShardedCellDataset(str(big_vocab_set), batch_size=16, context_length=64)
    assert ds.reader.vocab().size >= 60_000
    data = pickle.dumps(ds)
    assert len(data) < 64 * 1024, len(data)
    again = pickle.loads(data)  # and the worker's copy serves the same batches
    ds.set_epoch(1)
    again.set_epoch(1)
    a, b = next(iter(ds)), next(iter(again))
    assert all(torch.equal(a[k], b[k]) for k in ("input_ids", "attention_mask", "labels"))


@pytest.mark.slow
def test_a_worker_that_dies_while_starting_raises_within_seconds(big_vocab_set, tmp_path):
    """Any death during start-up (here: the main module exits when a spawned child imports it) made the
    parent block for ever writing the worker's start-up data. With a small start-up message, torch's own
    liveness check sees the dead worker; no signal handler is installed for it."""
    proc, seconds = _run_script(
        tmp_path,
        f"""
        import os
        import signal

        from shards import CellDataLoader, ShardedCellDataset

        if __name__ == "__mp_main__":
            os._exit(3)  # a spawned child dies while importing the main module

        if __name__ == "__main__":
            handlers = {{s: signal.getsignal(s) for s in signal.valid_signals()}}
            ds = ShardedCellDataset({str(big_vocab_set)!r}, batch_size=16, context_length=64)
            loader = CellDataLoader(ds, num_workers=2)
            try:
                next(iter(loader))
            except Exception as e:
                changed = [s for s in signal.valid_signals() if signal.getsignal(s) != handlers[s]]
                print(type(e).__name__, e, flush=True)
                print("handlers changed:", [signal.Signals(s).name for s in changed if s != signal.SIGCHLD])
                raise SystemExit(1)
            print("no error", flush=True)
        """,
        timeout=90,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr[-2000:]
    assert proc.stdout.startswith("WorkerStartupError a DataLoader worker died while starting"), proc.stdout
    assert "exited unexpectedly" in proc.stdout and "__main__" in proc.stdout
    assert "handlers changed: []" in proc.stdout
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


def _cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
@pytest.mark.parametrize("command", ["fit", "validate", "stream"])
def test_a_batch_larger_than_a_ranks_cells_is_an_error_not_a_spin(command, zarr_set, tmp_path):
    """A batch size no rank can fill planned epochs of no batches: ``fit`` looped on empty epochs for ever
    (and SIGTERM waited for a step that never came), ``stream`` printed "0 batches" and exited 0. Now
    each refuses before the first step, naming the option, the cells per rank and what to change (the
    subprocess timeout fails the test instead of hanging it). ``validate`` pads its last batch, so a
    huge validation batch is one padded batch of every val cell: it completes."""
    tiny = str(ROOT / "configs" / "train" / "tiny.yaml")
    if command == "stream":
        r = _cli("shards", "stream", str(zarr_set), "--batch-size", "5000")
        option = "--batch-size=5000"
    else:
        big = ["--data.val_batch_size", "5000"] if command == "validate" else ["--data.batch_size", "5000"]
        run = ["--trainer.default_root_dir", str(tmp_path / "run"), "--trainer.enable_progress_bar", "false"]
        r = _cli("training", command, "--config", tiny, "--data.path", str(zarr_set), *big, *run)
        option = "data.batch_size=5000"
        if command == "validate":
            assert r.returncode == 0 and "val/loss" in r.stdout, r.stderr[-2000:]
            return
    assert r.returncode == 1, r.stderr[-2000:]
    line = r.stderr.strip().splitlines()[-1]
    assert option in line and "0 batches per rank" in line and "cells" in line and "use " in line, line


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_single_process_run_stops_within_seconds_of_sigint_or_sigterm(sig, zarr_set, tmp_path):
    """Ctrl-C (SIGINT) and SIGTERM mid-run end a one-process ``fit`` within seconds, with a loader worker
    running, at a step boundary with a checkpoint: exit 130 for Ctrl-C, 75 (requeue) for SIGTERM."""
    tiny = str(ROOT / "configs" / "train" / "tiny.yaml")
    flag = tmp_path / "phase.txt"
    cmd = [sys.executable, "-m", "training", "fit", "--config", tiny, "--data.path", str(zarr_set)]
    cmd += ["--trainer.default_root_dir", str(tmp_path / "run"), "--trainer.enable_progress_bar", "false"]
    cmd += ["--trainer.max_steps", "100000", "--data.num_workers", "1"]
    cmd += ["--trainer.callbacks+=tests.training.helpers.PhaseFile", "--trainer.callbacks.path", str(flag)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if flag.exists() and flag.read_text().startswith("step ") and int(flag.read_text().split()[1]) >= 3:
            break
        time.sleep(0.05)
    proc.send_signal(sig)
    sent = time.monotonic()
    try:
        out = proc.communicate(timeout=30)[0]
    finally:
        proc.kill()
    assert time.monotonic() - sent < 30
    assert proc.returncode == (75 if sig == signal.SIGTERM else 130), out[-2000:]
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").exists(), out[-2000:]
