"""The benchmark suite runs end to end on a tiny corpus and reports figures from its own run."""

from __future__ import annotations

import json

import pytest

from benchmarks.__main__ import main


@pytest.mark.slow
def test_ingest_benchmark_smoke(corpus, tmp_path):
    assert main(["ingest", "--corpus", str(corpus[0].parent / "syn-*.h5ad"), "--out", str(tmp_path)]) == 0
    doc = json.loads((tmp_path / "results.json").read_text())
    names = {r["name"] for r in doc["results"]}
    assert names == {
        "cellshard h5ad->zarr",
        "cellshard h5ad->webdataset",
        "cellshard tokenizer kernel",
        "geneformer tokenizer algorithm",
    }
    assert all(r["value"] > 0 for r in doc["results"]) and doc["machine"]["cores"] >= 1
    assert "vs Geneformer algorithm" in (tmp_path / "REPORT.md").read_text()


@pytest.mark.slow
def test_loader_benchmark_smoke(zarr_set, wds_set, tmp_path):
    args = ["loader", "--zarr", str(zarr_set), "--wds", str(wds_set), "--batch-size", "16", "--context-length", "128"]
    assert main([*args, "--out", str(tmp_path)]) == 0
    doc = json.loads((tmp_path / "results.json").read_text())
    names = {r["name"] for r in doc["results"]}
    assert {"zarr read+decode (I/O limit)", "collate+mask (compute limit)", "zarr end to end, 2 workers",
            "webdataset end to end, 0 workers"} <= names  # fmt: skip
    assert {d["what"] for d in doc["derived"]} >= {"peak RSS, 10x shard set / 1x"}
    assert all(r["value"] > 0 for r in doc["results"])
