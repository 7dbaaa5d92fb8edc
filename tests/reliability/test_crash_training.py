"""A 2-rank torchrun job with ``--max-restarts 1`` in which one rank is SIGKILLed mid-epoch: torchrun
restarts both ranks, they resume from the last checkpoint (``--ckpt_path last``) and finish. Counting,
across ranks, the cells of the *committed* optimizer steps of epoch 0 (the steps up to the checkpoint
from the first attempt, the rest from the second) gives every cell exactly once (padded repeats weigh 0),
and every step after the resume has the loss of the uninterrupted run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from shards import load_manifest
from tests.conftest import ROOT
from tests.training.test_training_runs import _args, history

STEPS, EVERY, KILL_STEP, KILLED_RANK = 40, 5, 17, 1


def _torchrun(data: Path, root: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node=2",
        "--max-restarts=1",
        "--monitor-interval=0.5",
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
        "--data.remainder",
        "pad",
        "--data.return_cell_ids",
        "true",
        "--every_n_steps",
        str(EVERY),
        "--ckpt_path",
        "last",
        "--trainer.callbacks+=tests.training.helpers.RecordCells",
        "--trainer.callbacks.out_dir",
        str(root / "cells"),
        *extra,
    ]
    # as the README says: a fresh rendezvous store per restart (see training.strategies.restart_hazard)
    env = {**os.environ, "TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1"}
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    assert "rendezvous store is shared across restarts" not in proc.stderr
    return proc


def _records(root: Path, rank: int, attempt: int) -> list[dict]:
    path = root / "cells" / f"cells-rank{rank}-attempt{attempt}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.mark.slow
def test_a_rank_killed_mid_epoch_restarts_from_the_checkpoint_and_serves_every_cell_once(zarr_set, tmp_path):
    reference, crashed = tmp_path / "reference", tmp_path / "crashed"
    _torchrun(zarr_set, reference)
    kill = [
        "--trainer.callbacks+=tests.training.helpers.KillAt",
        "--trainer.callbacks.step",
        str(KILL_STEP),
        "--trainer.callbacks.rank",
        str(KILLED_RANK),
    ]
    _torchrun(zarr_set, crashed, *kill)

    # the first attempt died right after step KILL_STEP; the second started from the newest checkpoint
    first = {r: _records(crashed, r, 0) for r in (0, 1)}
    second = {r: _records(crashed, r, 1) for r in (0, 1)}
    assert first[KILLED_RANK][-1]["step"] == KILL_STEP and second[0] and second[1]
    resumed_from = min(rec["step"] for rec in second[0]) - 1
    assert resumed_from == KILL_STEP // EVERY * EVERY  # the last checkpoint before the kill (step 15)
    assert max(rec["step"] for r in (0, 1) for rec in second[r]) == STEPS

    # committed steps of epoch 0, across ranks: every train cell exactly once
    committed = [rec for r in (0, 1) for rec in first[r] if rec["step"] <= resumed_from]
    committed += [rec for r in (0, 1) for rec in second[r]]
    epoch0 = [rec for rec in committed if rec["epoch"] == 0]
    assert epoch0 and any(rec["epoch"] == 1 for rec in committed)  # the run went past the epoch
    counts = Counter(c for rec in epoch0 for c in rec["cells"])
    n_train = load_manifest(zarr_set)["splits"]["train"]["n_cells"]
    assert len(counts) == n_train and set(counts.values()) == {1}
    # and the uninterrupted run served the same cells at the same steps
    ref = {(r, rec["step"]): rec["cells"] for r in (0, 1) for rec in _records(reference, r, 0)}
    assert all(ref[(r, rec["step"])] == rec["cells"] for r in (0, 1) for rec in second[r])

    # every step after the resume has the uninterrupted run's loss, bit for bit (the history is indexed by
    # the number of steps done before the logging one: the first step after the resume is `resumed_from`)
    a = history(reference)["train/loss"].dropna()
    b = history(crashed)["train/loss"].dropna().loc[resumed_from:]
    assert list(b.index) == list(range(resumed_from, STEPS))
    assert np.array_equal(a.loc[b.index].to_numpy(), b.to_numpy())
    ckpts = sorted(p.name for p in (crashed / "checkpoints").glob("last*.ckpt"))
    assert ckpts == ["last.ckpt"]  # one last checkpoint, refreshed in place
