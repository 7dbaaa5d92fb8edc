"""``make demo``'s learning gate, run as the demo runs it: the realistic atlas (``configs/ingest/
demo-synth.yaml``), built as the demo builds it, pretrained with ``configs/train/demo.yaml``; then
``training report --must-beat-baselines`` must pass: the pretrained embedding's linear probe on held-out
donors above both PCA-50 of log1p-CP10k and an untrained encoder of the same shape by ``DEMO_MARGIN``
(the recipe's measured run-to-run spread). Without the cell objective the same run scores ~25 points
lower (benchmarks/results/2026-12-05-atlas-recipe), so the recipe losing what makes it learn fails here.

The one test of the suite that trains for real (~1,500 CPU steps, minutes): its whole point is that
learning takes that long."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT
from training.evaluate.report import DEMO_MARGIN


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=2400)


@pytest.mark.slow
def test_demo_recipe_beats_pca50_and_untrained_on_held_out_donors(tmp_path):
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
        r = _run(*args)
        assert r.returncode == 0, f"{' '.join(args[:2])}: {r.stderr[-3000:]}"
    r = _run("training", "report", "--run", str(run), "--must-beat-baselines")
    summary = json.loads((run / "summary.json").read_text())
    c = summary["comparison"]
    assert c is not None and c["held_out_donors"] >= 3 and c["held_out_cells"] >= 500, summary["notes"]
    scores = {k: round(c[k]["linear"], 3) for k in ("pretrained", "untrained", "pca50")}
    assert r.returncode == 0, f"{scores}, margin {DEMO_MARGIN}: {r.stderr}"
    assert c["pretrained"]["linear"] >= max(c["pca50"]["linear"], c["untrained"]["linear"]) + DEMO_MARGIN, scores
    assert "the pretrained embedding beats both baselines" in r.stdout
