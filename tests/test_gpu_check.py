"""``python -m benchmarks gpu`` on a machine without CUDA, as CI and most users' laptops are: every row
that can run runs (packed = padded, compile, data wait), every other row is listed as skipped with its
reason, and results.json and REPORT.md are written. On a GPU the same command runs every row."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT

CUDA_ROWS = {"device collate", "pinned copy", "bf16", "strategies", "clock", "mfu", "flex attention"}


@pytest.mark.slow
def test_the_gpu_check_runs_on_cpu_with_its_skips_listed(zarr_set, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA machine runs every row; this test is the CPU run")
    out = tmp_path / "gpu"
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "gpu", "--out", str(out), "--data", str(zarr_set), "--quick"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    doc = json.loads((out / "results.json").read_text())
    assert {s["row"] for s in doc["config"]["skipped"]} == CUDA_ROWS
    assert all(s["reason"] == "no CUDA device" for s in doc["config"]["skipped"])
    got = {(r["name"], r["metric"]): r["value"] for r in doc["results"]}
    assert got[("packed = padded, tiny", "max_abs_hidden_diff")] < 1e-4
    assert got[("packed = padded, tiny", "computed_tokens_packed_over_padded")] < 1.0
    for layout in ("padded", "packed"):
        assert got[(f"compile tiny, {layout}", "graph_breaks")] == 0
        assert got[(f"compile tiny, {layout}", "graphs_compiled")] >= 1
        assert got[(f"compile tiny, {layout}", "max_rel_gap_to_eager")] < 1e-3
    for workers in (0, 2, 4):
        assert 0.0 <= got[(f"data wait, tiny, {workers} workers", "data_wait_frac")] < 1.0
    report = (out / "REPORT.md").read_text()
    assert all(f"skipped: {row} (no CUDA device)" in report for row in CUDA_ROWS)
