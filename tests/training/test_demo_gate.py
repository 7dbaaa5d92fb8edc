"""``make demo``'s learning gate as its own file: at ~10 minutes on 2 cores it is the suite's longest test,
and pytest-xdist (``--dist loadfile``) then runs every other training file beside it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from training.evaluate.report import DEMO_GATE_SPLIT_SEEDS, DEMO_SEED_SPREAD

ROOT = Path(__file__).resolve().parents[2]


def _run_module(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=2400)


@pytest.mark.slow
def test_demo_recipe_beats_untrained_and_frequency_on_held_out_donors_and_reports_standard_pca(tmp_path):
    """``make demo``'s learning gate, run as the demo runs it: the realistic atlas (``configs/ingest/
    demo-synth.yaml``), built as the demo builds it, pretrained with ``configs/train/demo.yaml``; then
    ``training report --must-beat untrained frequency`` on the gate's own donor splits (drawn after the
    recipe was fixed) must pass: the held-out linear probe above an untrained encoder of the same shape by
    more than the sampling error plus the seed spread, the val loss below the frequency-only baseline's.
    The report carries the standard PCA-50 row (scanpy's pipeline), which the recipe does not beat: the
    README says so with the numbers, and this test keeps that claim true (it fails if the standard row goes
    missing or if the recipe starts beating it, so the README is updated)."""
    corpus, shards, run = tmp_path / "corpus", tmp_path / "zarr", tmp_path / "train"
    synth = ["ingest", "synth", "--config", "configs/ingest/demo-synth.yaml", "--out", str(corpus / "demo.h5ad")]
    build = ["ingest", "build", "--config", "configs/ingest/demo.yaml", "--input", str(corpus / "demo-*.h5ad")]
    fit = ["training", "fit", "--config", "configs/train/demo.yaml", "--data.path", str(shards)]
    steps = [
        synth,
        [*build, "--out", str(shards), "--format", "zarr"],
        [*fit, "--trainer.default_root_dir", str(run), "--trainer.enable_progress_bar", "false"],
    ]
    for args in steps:
        r = _run_module(*args)
        assert r.returncode == 0, f"{' '.join(args[:2])}: {r.stderr[-3000:]}"
    seeds = [str(s) for s in DEMO_GATE_SPLIT_SEEDS]
    gate = ["--must-beat", "untrained", "frequency", "--split-seeds", *seeds, "--scvi", "false"]
    r = _run_module("training", "report", "--run", str(run), *gate)
    summary = json.loads((run / "summary.json").read_text())
    c = summary["comparison"]
    assert c is not None and c["held_out_donors"] >= 3 and c["held_out_cells"] >= 500, summary["notes"]
    scores = {k: round(c[k]["linear"], 3) for k in ("pretrained", "untrained", "pca50", "pca50_all")}
    assert r.returncode == 0, f"{scores}: {r.stderr}"
    assert [s["seed"] for s in c["splits"]] == list(DEMO_GATE_SPLIT_SEEDS)
    assert c["untrained"]["diff"]["linear"] > 1.96 * c["untrained"]["diff"]["se"] + DEMO_SEED_SPREAD, scores
    assert c["pca50"]["diff"]["linear"] < 0, scores  # README: the standard PCA-50 is ahead of this recipe
    assert "PCA-50 scanpy standard" in r.stdout and "pretrained - untrained encoder" in r.stdout
    makefile = (ROOT / "Makefile").read_text()
    assert f"--split-seeds {' '.join(seeds)}" in makefile  # make demo gates on the same splits
