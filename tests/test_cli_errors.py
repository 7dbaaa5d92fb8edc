"""Every command's error is one line naming the option or file, with exit 1 (2: usage), never a
traceback: the CLIs as a user meets them, in real processes."""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.conftest import ROOT

TINY = str(ROOT / "configs/train/tiny.yaml")
CASES = [
    (["ingest", "build", "--input", "nope.h5ad", "--out", "o"], 1, "nope.h5ad: input file does not exist"),
    (["ingest", "build", "--input", "x.h5ad", "--out", "o", "--val-fraction", "2"], 1, "--val-fraction 2.0"),
    (["ingest", "inspect", "nope"], 1, "nope is not a finished shard set"),
    (["ingest", "verify", "nope"], 2, "nope: no such directory"),
    (["ingest", "synth", "--cells", "0", "--out", "x.h5ad"], 1, "--cells >= 1"),
    (["shards", "stream", "nope"], 1, "nope is not a finished shard set"),
    (["training", "fit", "--config", TINY, "--data.path", "nope"], 1, "data.path='nope'"),
    (["training", "validate", "--config", TINY, "--data.path", "nope"], 1, "data.path='nope'"),
    (["training", "embed", "--ckpt", "nope", "--data", "s", "--out", "x.h5ad"], 1, "--ckpt nope: no such file"),
    (["training", "embed", "--ckpt", "nope", "--out", "x.h5ad", "--pooling", "max"], 1, "--pooling 'max'"),
    (["training", "export", "--ckpt", "nope", "--out", "m"], 1, "--ckpt nope: no such file"),
    (["training", "report", "--run", "nope"], 1, "--run nope: config.yaml is missing"),
    (["training", "report", "--run", "nope", "--must-beat", "pca"], 1, "--must-beat pca: choose among"),
    (["training", "embed", "--ckpt", "nope", "--h5ad", "x.h5ad", "--out", "./x.h5ad"], 1, "is the input file"),
    (["training", "test", "--config", TINY], 2, "'test' is not a command; the commands: fit, validate, embed"),
    (["training", "fit", "--config", "tinyy", "--data.path", "s"], 1, "--config tinyy: no such file, nor a packaged"),
]


def _run(argv: list[str], cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *argv], cwd=cwd, capture_output=True, text=True, timeout=180)


@pytest.mark.slow
def test_every_command_fails_with_one_line(tmp_path):
    (tmp_path / "x.h5ad").write_bytes(b"")
    with ThreadPoolExecutor(2) as pool:
        procs = list(pool.map(lambda case: _run(case[0], tmp_path), CASES))
    for (argv, code, fragment), proc in zip(CASES, procs, strict=True):
        lines = [line for line in proc.stderr.splitlines() if line.strip() and not line.startswith("Seed set to")]
        where = f"{' '.join(argv)}: {proc.stderr[-1500:]}"
        assert proc.returncode == code, where
        assert "Traceback" not in proc.stderr and fragment in proc.stderr, where
        if code == 1:
            assert len(lines) == 1, where


@pytest.mark.slow
def test_a_packaged_config_resolves_by_name_from_any_directory(zarr_set, tmp_path):
    """``--config tiny`` outside the repository: the recipes ship with the package."""
    run = ["--data.path", str(zarr_set), "--trainer.max_steps", "2", "--trainer.default_root_dir", str(tmp_path / "r")]
    proc = _run(["training", "fit", "--config", "tiny", *run, "--trainer.enable_progress_bar", "false"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "r" / "checkpoints" / "last.ckpt").exists()
