"""The benchmark suite runs end to end on a tiny corpus and reports figures from its own run."""

from __future__ import annotations

import json

import pytest

from benchmarks.__main__ import main
from benchmarks.compare import LOADERS
from shards.loading.readers import ShardSetReader


@pytest.mark.slow
def test_loader_benchmark_smoke(zarr_set, wds_set, tmp_path):
    args = ["loader", "--zarr", str(zarr_set), "--wds", str(wds_set), "--batch-size", "16", "--context-length", "128"]
    assert main([*args, "--out", str(tmp_path)]) == 0
    doc = json.loads((tmp_path / "results.json").read_text())
    names = {r["name"] for r in doc["results"]}
    assert {
        "zarr read+decode (I/O limit)",
        "collate+mask (compute limit)",
        "zarr end to end, 2 workers",
        "webdataset end to end, 0 workers",
    } <= names
    assert {d["what"] for d in doc["derived"]} >= {"peak RSS, 10x shard set / 1x"}
    assert all(r["value"] > 0 for r in doc["results"])
    mixing = {r["name"]: r for r in doc["results"] if r["group"] == "mixing" and r["metric"] == "cells_per_sec"}
    assert set(mixing) == {
        "plain",
        "2 streams, weights 1:1",
        "weighted cell_type, no replacement",
        "weighted cell_type, replacement",
        "grouped by dataset_id",
        "gene panel (half the genes)",
    }
    n = int(ShardSetReader(zarr_set).shard_cells.sum())  # each configuration streamed its whole epoch
    assert mixing["plain"]["config"]["cells"] == n // 16 * 16
    assert mixing["weighted cell_type, no replacement"]["config"]["cells"] == n // 2 // 16 * 16
    assert {d["what"] for d in doc["derived"]} >= {f"{k} / plain, cells/s" for k in mixing if k != "plain"}


@pytest.mark.slow
def test_train_benchmark_smoke(zarr_set, tmp_path):
    args = ["train", "--data", str(zarr_set), "--steps", "6", "--feed-batches", "20", "--quick", "--learn-steps", "8"]
    args += ["--no-scvi"]  # scVI would be imported into this test process (its Lightning classes then join --help)
    assert main([*args, "--out", str(tmp_path)]) == 0
    doc = json.loads((tmp_path / "results.json").read_text())
    got = {(r["name"], r["metric"]): r["value"] for r in doc["results"]}
    learn = [r for r in doc["results"] if r["group"] == "learn"]  # the report's comparison, in results.json
    assert {(r["name"], r["metric"]) for r in learn} == {
        (f"learn demo 8 steps: {e}", m)
        for e in ("pretrained", "pca50", "pca50_all", "untrained")
        for m in ("linear", "knn", "mixing")
    }
    assert all(0 <= r["value"] <= 1 for r in learn if r["metric"] != "mixing")
    assert learn[0]["config"]["held_out_donors"] >= 1 and learn[0]["config"]["label"] == "cell_type"
    pca = got[("learn demo 8 steps: pca50", "linear")]
    derived = {d["what"]: d for d in doc["derived"]}
    ratio = derived["learn demo 8 steps: linear probe on held-out donors, pretrained / PCA-50 scanpy standard"]
    assert ratio["value"] == pytest.approx(got[("learn demo 8 steps: pretrained", "linear")] / pca)
    assert ratio["met"] == (ratio["value"] > 1)
    for strategy in ("auto", "ddp", "deepspeed_stage_2"):
        procs = 1 if strategy == "auto" else 2
        assert got[(f"train tiny, {procs} proc, {strategy}", "cells_per_sec")] > 0
    for model in ("geneformer-10m", "geneformer-106m"):
        for workers in (0, 1, 2):
            assert 0 <= got[(f"feed H100 {model}, {workers} workers", "data_wait_frac")] < 1
            assert got[(f"feed H100 {model}, {workers} workers", "loader_cores_per_gpu")] > 0
    for model in ("geneformer-10m", "geneformer-106m"):
        for workers in (0, 2):
            name = f"feed H100 {model}, {workers} workers, device collate"
            assert 0 <= got[(name, "data_wait_frac")] < 1
            assert got[(name, "loader_cores_per_gpu")] > 0
    assert {d["what"] for d in doc["derived"]} >= {
        "data wait feeding an H100, geneformer-106m, 2 workers",
        "loader CPU cores per H100, geneformer-10m, device collate",
    }
    for model in ("geneformer-10m", "geneformer-106m"):  # the pads' share, on this set and a census-like mix
        for depth in ("atlas", "census-like"):
            plain = got[(f"padding {model}, {depth}, plain", "padding_frac")]
            packed = got[(f"padding {model}, {depth}, pack", "padding_frac")]
            assert 0 < packed <= plain < 1
            assert got[(f"padding {model}, {depth}, pack-blocks", "flops_per_real_token_vs_plain")] < 1


def test_padding_counts_match_the_loader_s_batches(zarr_set):
    """The padding benchmark lays batches out as the loader does: its padded and packed token counts for
    an epoch equal those of the real loader's batches over the same cells in the same order."""
    import numpy as np
    import torch

    from benchmarks.padding import measure
    from shards import ShardedCellDataset
    from training.model import EncoderConfig

    cfg = EncoderConfig(vocab_size=100, d_model=16, n_layers=1, n_heads=2, max_positions=512)
    for pack in (False, True):
        ds = ShardedCellDataset(zarr_set, batch_size=8, context_length=512, rank=0, world_size=1, pack=pack)
        batches = list(ds)
        if not pack:
            genes = np.concatenate([b["attention_mask"].sum(1).numpy() - 2 for b in batches])
            slots_plain = sum(b["input_ids"].numel() for b in batches)
        else:
            slots_packed = sum(b["input_ids"].numel() for b in batches)
    real = float((np.minimum(genes, 510) + 2).sum())
    assert measure(cfg, genes, 8, 512, "plain")["padding_frac"] == pytest.approx(1 - real / slots_plain)
    assert measure(cfg, genes, 8, 512, "pack")["padding_frac"] == pytest.approx(1 - real / slots_packed)
    assert torch.is_tensor(batches[0]["segments"])


@pytest.mark.slow
def test_suite_run_writes_a_valid_report(tmp_path):
    """``run --suite tiny``: every section present, results.json valid against its schema, plots written."""
    from benchmarks.report import validate_results

    out = tmp_path / "out"
    assert main(["run", "--suite", "tiny", "--out", str(out), "--cache", str(tmp_path / "cache")]) == 0
    doc = json.loads((out / "results.json").read_text())
    validate_results(doc)
    groups = {r["group"] for r in doc["results"]}
    ingest = {r["name"] for r in doc["results"] if r["group"] == "ingest"}
    assert ingest == {
        "cellshard h5ad->zarr",
        "cellshard h5ad->zarr, 2 threads",
        "cellshard h5ad->webdataset",
        "cellshard h5ad->webdataset, 2 threads",
        "cellshard soma->zarr",
        "cellshard soma->zarr, 2 threads",
        "cellshard soma->zarr, 1/4 of the cells",
        "cellshard tokenizer kernel",
        "geneformer tokenizer algorithm",
    }
    assert "vs Geneformer algorithm" in (out / "REPORT.md").read_text()
    assert {"ingest", "compare", "shuffle", "limits", "scaling", "memory", "scale", "suite"} <= groups
    contexts = {r["config"]["context_length"] for r in doc["results"] if r["group"] in ("compare", "scaling")}
    assert contexts == {512, 2048, 4096}
    copies = {r["config"]["shard_set_copies"] for r in doc["results"] if r["group"] == "memory"}
    assert copies == {1, 10}
    loaders = {r["config"]["loader"] for r in doc["results"] if r["group"] == "compare"}
    assert loaders == set(LOADERS)
    # every loader served every cell of the epoch once (the per-cell baseline stops at its cap)
    epochs = [r for r in doc["results"] if r["group"] == "compare" and r["metric"] == "cells_per_sec"]
    assert all(r["config"]["whole_epoch"] for r in epochs if r["config"]["loader"] != "per-cell AnnData Dataset")
    assert {d["what"] for d in doc["derived"]} >= {
        "cellshard Zarr / per-cell AnnData Dataset",
        "cellshard Zarr / tiledbsoma-ml ExperimentDataset",
        "cellshard Zarr / arrayloaders ZarrSparseDataset",
        "SOMA -> Zarr / h5ad -> Zarr ingest rate",
        "sampler plan time per rank (s)",
    }
    assert all(d["met"] in (True, False, None) for d in doc["derived"])
    report = (out / "REPORT.md").read_text()
    assert "## Targets" in report and "arrayloaders" in report and "annbatch" in report
    for name in doc["plots"]:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    bad = dict(doc, results=[{**doc["results"][0], "value": "fast"}])
    with pytest.raises(Exception, match="is not of type 'number'"):
        validate_results(bad)


@pytest.mark.parametrize(
    ("value", "target", "met"),
    [
        (21.0, ">= 20", True),
        (19.9, ">= 20", False),
        (0.6, "< 1", True),
        (1.0, "< 1", False),
        (0.0, "0", True),
        (2.0, "0", False),
        (1.05, "~1 (flat)", True),
        (1.3, "~1 (flat)", False),
        (0.8, "report (2 cores)", None),
    ],
)
def test_target_verdicts(value, target, met):
    from benchmarks.report import verdict

    assert verdict(value, target) is met


def test_target_ratios_compare_loaders_at_one_context():
    """A faster run at another context (the scaling section's 512) must not stand in for cellshard."""
    from benchmarks.report import Result
    from benchmarks.suite import ratios

    def row(group, name, value, context=2048, **cfg):
        return Result(group, name, "cells_per_sec", value, "cells/s", {"context_length": context, **cfg})

    results = [
        row("compare", "cellshard zarr, 0 workers", 4000.0, workers=0),
        row("compare", "tiledbsoma-ml ExperimentDataset, 0 workers", 2000.0, workers=0),
        row("scaling", "cellshard zarr, context 512, 2 workers", 9000.0, 512, workers=2),
        row("scaling", "cellshard zarr, 1 workers", 5000.0, workers=1),
        row("limits", "zarr read+decode (I/O limit)", 10000.0),
        row("limits", "collate+mask (compute limit)", 8000.0),
        Result("memory", "zarr x1 shard set", "peak_rss", 500.0, "MiB", {"shard_set_copies": 1}),
        Result("memory", "zarr x10 shard set", "peak_rss", 500.0, "MiB", {"shard_set_copies": 10}),
        Result("memory", "zarr x1 shard set", "cells_per_sec", 1.0, "cells/s", {"shard_set_copies": 1}),
        Result("memory", "zarr x10 shard set", "cells_per_sec", 1.0, "cells/s", {"shard_set_copies": 10}),
    ]
    got = {what: value for what, value, _ in ratios(results)}
    assert got["cellshard Zarr / tiledbsoma-ml ExperimentDataset"] == 2.5  # 5,000 (1 worker, 2,048) / 2,000
    assert got["cellshard Zarr / min(I/O, collate limit)"] == 5000 / 8000


def test_every_sampling_mode_plans_with_its_invariants_at_small_scale(tmp_path):
    """``benchmarks.scale_modes`` at a small size, in this process: each mode's invariants hold (the full
    size, 160M cells x 1,024 ranks, is run by hand and committed with its table)."""
    from benchmarks.scale_modes import MODES, ModeSpec, label_file, run_mode, shard_sizes, table

    spec = ModeSpec(cells=400_000, shards=200, ranks=16, workers=2, elastic_ranks=12, classes=50)
    labels = label_file(spec, shard_sizes(spec), tmp_path / "labels.npz")
    rows = [run_mode(mode, spec, labels) for mode in MODES]
    for r in rows:
        assert r["equal_batches"] and r.get("exact_count", True), r
        assert r.get("elastic_exact", True) and r["batches_per_slot"] > 0, r
        assert 0 <= r["token_imbalance"] < 0.2, r  # contiguous spans of random shards: a few percent
    text = table(rows, spec)
    assert all(f"| {mode} |" in text for mode in MODES)


def test_a_large_index_over_one_data_shard_reads_as_a_set(zarr_set, tmp_path):
    """``benchmarks.scale_processes.make_index``: a resealed index of repeated shards that the loader takes
    (what the real-process atlas run streams from)."""
    from benchmarks.scale_processes import make_index
    from shards import ShardedCellDataset

    n = make_index(zarr_set, tmp_path / "index", 50)
    ds = ShardedCellDataset(tmp_path / "index", batch_size=16, context_length=64, rank=0, world_size=2)
    one = json.loads((zarr_set / "index.json").read_text())
    first = next(s for s in one["shards"] if s["split"] == "train")["n_cells"]
    assert n == 50 * first and len(ds) == n // 2 // 16
    assert next(iter(ds))["input_ids"].shape[0] == 16
    weighted = ShardedCellDataset(
        tmp_path / "index", batch_size=16, context_length=64, weighting={"column": "cell_type"}
    )
    assert len(weighted) == n // 16 and weighted.mode.label_counts[0].n_shards == 50  # the copies' label counts


def test_atlas_headroom(tmp_path):
    """The calibration check draws the atlas as ``ingest synth`` would and scores PCA-k against a
    supervised readout of every gene and the latent ceiling, on one donor split; a typo in an override is
    one clear line."""
    from benchmarks import atlas_headroom

    args = ["--cells", "800", "--genes", "600", "--label", "cell_type", "--set", "latent_sd=0.25"]
    assert atlas_headroom.main([*args, "--out", str(tmp_path)]) == 0
    doc = json.loads((tmp_path / "results.json").read_text())
    got = {r["metric"]: r["value"] for r in doc["results"] if r["name"] == "atlas cell_type"}
    assert set(got) == {
        "genes_per_cell",
        "classes",
        "pca10",
        "pca20",
        "pca50",
        "pca50_knn",
        "pca100",
        "all_genes",
        "latent",
    }
    assert got["classes"] == 48 and all(0 < got[k] <= 1 for k in ("pca10", "pca50", "all_genes"))
    assert got["pca50"] > 1.5 / got["classes"]  # the types are there to be found
    assert got["latent"] >= got["pca50"]  # counting noise and batch effects only lose information
    room, readout = doc["derived"]  # the target is room below the latent ceiling
    assert room["value"] == pytest.approx(got["pca50"] / got["latent"]) and room["met"] == (room["value"] < 0.9)
    assert readout["value"] == pytest.approx(got["pca50"] / got["all_genes"]) and readout["met"] is None
    with pytest.raises(SystemExit, match="latent_sdd"):
        atlas_headroom.main(["--set", "latent_sdd=1", "--out", str(tmp_path)])


def test_startup_benchmark_smoke(tmp_path, monkeypatch):
    """The start-up suite times fresh interpreters and scores them against the issue's targets."""
    from benchmarks import startup

    monkeypatch.setattr(startup, "PROBES", (("import shards", ["-c", "import shards"]), startup.PROBES[4]))
    results = startup.run(tmp_path, rounds=2)
    assert [r.name for r in results] == ["import shards", "ingest build --help"]
    assert all(r.value > 0 and len(r.config["all_s"]) == 2 for r in results)
    assert [name for name, _, _ in startup.ratios(results)] == [
        "import shards: median / target",
        "ingest build --help: median / target",
    ]
