"""Exact resume from every checkpoint a run writes: every per-step loss after the resume equals the
uninterrupted run's, bit for bit.

The matrix, in this process (``python -m training fit``'s own ``main``): the ``last.ckpt`` written when
``fit`` ends (after ``max_steps`` mid-epoch, at an epoch's end, after ``max_epochs``, right after a
validation), an ``every_n_steps`` checkpoint written before a validation, the best-by-metric checkpoint
written after one, and the checkpoint a signal makes (SIGUSR1: stop at the step boundary, exit 75);
with 0, 1 and 2 DataLoader workers (persistent or not); with a token budget, a 2-stream weighted mix,
grouped batches, value bins and packed batches (collated on the device). A 2-rank ``torchrun`` job
stopped by real signals is in ``tests/reliability/test_preemption.py``.
"""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.conftest import ROOT, small_build

TINY = str(ROOT / "configs" / "train" / "tiny.yaml")


@pytest.fixture(autouse=True)
def _command_line(monkeypatch):
    monkeypatch.setattr("sys.argv", ["python -m training"])  # the CLI is given its arguments directly


@pytest.fixture(scope="module")
def sets(tmp_path_factory) -> dict[str, Path]:
    """A small set (an epoch of ~13 steps) and the same cells as WebDataset (one vocabulary: a mix)."""
    from ingest import SynthSpec, synthesize

    root = tmp_path_factory.mktemp("resume")
    first = [p for p, _ in synthesize(SynthSpec(cells=600, genes=800, datasets=3, seed=13), root / "c.h5ad")]
    out = {}
    for fmt in ("zarr", "webdataset"):
        out[fmt] = root / fmt
        small_build(first, out[fmt], format=fmt, val_fraction=0.3, split_by="cell", cells_per_shard=200, seed=5)
    return out


def _epoch_steps(data: Path) -> int:
    from shards import load_manifest

    return load_manifest(data)["splits"]["train"]["n_cells"] // 32  # batch 32, remainder dropped, one slot


def _fit(root: Path, data: Path, steps: int, *extra: str, code: int = 0) -> None:
    from training.fit.cli import main

    args = [
        "fit",
        "--config",
        TINY,
        "--data.path",
        str(data),
        "--trainer.default_root_dir",
        str(root),
        "--trainer.max_steps",
        str(steps),
        "--model.scheduler.total_steps",
        "30",
        "--trainer.log_every_n_steps",
        "1",
        "--trainer.enable_progress_bar",
        "false",
        "--data.num_workers",
        "0",
        "--data.context_length",
        "64",
        "--data.val_split",
        "null",
        "--trainer.num_sanity_val_steps",
        "0",
        *extra,
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Lightning's advice on the way is not what this checks
        assert main(args) == code


def _losses(root: Path, column: str = "train/loss") -> pd.Series:
    table = pd.read_csv(root / "history.csv").set_index("step")
    return table[column].dropna() if column in table else pd.Series(dtype=float)


def _same_after(full: Path, resumed: Path, step: int, column: str = "train/loss") -> None:
    a, b = _losses(full, column), _losses(resumed, column)
    assert list(b.index) == list(a.index), (column, list(a.index), list(b.index))
    assert np.array_equal(a.loc[step:].to_numpy(), b.loc[step:].to_numpy()), (column, a.loc[step:], b.loc[step:])


def _resume(tmp: Path, data: Path, first: int, last: int, *extra: str, ckpt: str = "last.ckpt") -> Path:
    """Stop at ``first``, resume from ``ckpt`` to ``last``: the run directory."""
    run = tmp / "run"
    _fit(run, data, first, *extra)
    _fit(run, data, last, *extra, "--ckpt_path", str(run / "checkpoints" / ckpt))
    return run


@pytest.mark.slow
def test_the_checkpoint_fit_ends_with_and_epoch_boundaries(sets, tmp_path, caplog):
    data, full = sets["zarr"], tmp_path / "full"
    epoch = _epoch_steps(data)
    assert 8 < epoch < 25, epoch  # the runs below cross an epoch boundary
    _fit(full, data, 30)
    # the reported case: last.ckpt after max_steps in the middle of an epoch (the epoch then carries on)
    with caplog.at_level("INFO", logger="training"):
        run = _resume(tmp_path / "mid", data, 6, 30)
    _same_after(full, run, 6)
    line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("resuming from"))
    assert "step 6, epoch 0, 6 batches of epoch 0 already served" in line and "exact" in line, line
    # at an epoch's end (max_steps = the epoch's length): the next epoch starts afresh
    _same_after(full, _resume(tmp_path / "boundary", data, epoch, 30), epoch)
    # after max_epochs
    run = tmp_path / "epochs" / "run"
    _fit(run, data, -1, "--trainer.max_epochs", "1")
    _fit(run, data, 30, "--ckpt_path", str(run / "checkpoints" / "last.ckpt"))
    _same_after(full, run, epoch)
    # a signal: stop at the step boundary, last.ckpt, exit 75; `--ckpt_path last` continues
    run = tmp_path / "signal" / "run"
    signal = ["--trainer.callbacks+=tests.training.helpers.SignalAt", "--trainer.callbacks.step", "9"]
    _fit(run, data, 30, *signal, code=75)
    assert _losses(run).index.max() == 8  # steps 0..8: stopped after the 9th
    _fit(run, data, 30, "--ckpt_path", "last")
    _same_after(full, run, 9)


@pytest.mark.slow
def test_checkpoints_around_validation(sets, tmp_path):
    """``every_n_steps`` (written before the validation of its step), best-by-metric (after it) and the
    last.ckpt written right after a validation; validation losses match too."""
    data, full = sets["zarr"], tmp_path / "full"
    val = ["--data.val_split", "val", "--trainer.val_check_interval", "4", "--every_n_steps", "4"]
    _fit(full, data, 16, *val)
    part = tmp_path / "part"
    _fit(part, data, 8, *val)
    ckpts = part / "checkpoints"
    best = next(p.name for p in ckpts.glob("best-*.ckpt"))
    for name, step in [("last.ckpt", 8), ("step-4.ckpt", 4), (best, int(best[5:-5]))]:
        run = tmp_path / name / "run"
        shutil.copytree(part, run)
        _fit(run, data, 16, *val, "--ckpt_path", str(run / "checkpoints" / name))
        _same_after(full, run, step)
        _same_after(full, run, step, "val/loss")


@pytest.mark.slow
@pytest.mark.parametrize("workers", ["1", "2"])
def test_with_dataloader_workers(sets, tmp_path, workers):
    data, full = sets["zarr"], tmp_path / "full"
    opts = ["--data.num_workers", workers]
    _fit(full, data, 20, *opts)
    _same_after(full, _resume(tmp_path / "persistent", data, 7, 20, *opts), 7)
    if workers == "2":
        opts += ["--data.persistent_workers", "false"]
        _same_after(full, _resume(tmp_path / "fresh", data, 7, 20, *opts), 7)


MODES = {
    "token budget": ["--data.token_budget", "1200"],
    "grouped batches": ["--data.group_by", "dataset_id", "--data.remainder", "pad"],
    "value bins": ["--data.value_bins", "11"],
    # packed on the device: the ragged batch carries the packing plan, the module packs after collating
    "packed, device collate": [
        "--data.pack",
        "true",
        "--data.context_length",
        "512",
        "--data.collate_on",
        "device",
        "--data.num_workers",
        "1",
    ],
    "weighted mix": [
        "--data.path",
        "null",
        "--data.num_samples",
        "600",
        "--data.weighting",
        '{"column": "cell_type", "smoothing": 20}',
    ],
}


@pytest.mark.slow
@pytest.mark.parametrize("mode", list(MODES))
def test_loader_modes(sets, tmp_path, mode):
    opts = list(MODES[mode])
    if mode == "weighted mix":
        streams = f'[{{"path": "{sets["zarr"]}", "weight": 0.7}}, {{"path": "{sets["webdataset"]}", "weight": 0.3}}]'
        opts += ["--data.streams", streams]
    data, full = sets["zarr"], tmp_path / "full"
    _fit(full, data, 16, *opts)
    _same_after(full, _resume(tmp_path / "r", data, 6, 16, *opts), 6)


@pytest.mark.slow
def test_device_collate_trains_exactly_like_host_collate(sets, tmp_path):
    """``data.collate_on: device``: a worker ships ragged batches, the module pads and masks them in
    ``on_after_batch_transfer``; every step's loss equals the host-collated run's."""
    data, bins = sets["zarr"], ["--data.value_bins", "11"]
    _fit(tmp_path / "host", data, 8, *bins)
    _fit(tmp_path / "device", data, 8, *bins, "--data.collate_on", "device", "--data.num_workers", "1")
    _same_after(tmp_path / "host", tmp_path / "device", 0)
    assert len(_losses(tmp_path / "device")) == 8
