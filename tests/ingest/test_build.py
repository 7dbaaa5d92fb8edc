"""End-to-end builds read back with stock readers and checked against an independent oracle."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import anndata as ad
import jsonschema
import numpy as np
import pyarrow.parquet as pq
import pytest
import webdataset as wds
import yaml
import zarr

from ingest.cli import main
from shards import ShardError, load_manifest, read_vocab
from shards.format.manifest import schema
from tests.conftest import ROOT, manifest_without_time, reference_tokens, small_build


def _read_zarr_set(root: Path) -> dict[str, tuple[np.ndarray, np.ndarray, dict]]:
    cells = {}
    for shard in load_manifest(root)["shards"]:
        g = zarr.open_group(str(root / shard["path"]), mode="r")
        offsets, genes, counts = g["offsets"][:], g["genes"][:], g["counts"][:]
        meta = pq.read_table(root / shard["files"][0]["path"]).to_pylist()
        assert len(meta) == len(offsets) - 1 == shard["n_cells"]
        for i, row in enumerate(meta):
            a, b = offsets[i], offsets[i + 1]
            cells[row["cell_id"]] = (genes[a:b], counts[a:b], {**row, "split": shard["split"]})
    return cells


def _read_wds_set(root: Path) -> dict[str, tuple[np.ndarray, np.ndarray, dict]]:
    manifest = load_manifest(root)
    urls = [str(root / s["path"]) for s in manifest["shards"]]
    cells, keys = {}, []
    for sample in wds.WebDataset(urls, shardshuffle=False).decode():  # the contract's stock expression
        meta = sample["json"]
        keys.append(sample["__key__"])
        cells[meta["cell_id"]] = (sample["genes.npy"], sample["counts.npy"], meta)
    assert keys == [f"c{i:012d}" for i in range(manifest["n_cells"])]  # keys are the shard-set index
    return cells


def _oracle(corpus: list[Path], root: Path) -> dict[str, np.ndarray]:
    """Expected genes per cell_id, from the h5ad files and the written vocab/medians, the slow way."""
    vocab = read_vocab(root / "vocab.csv").token_of()
    medians = dict(line.split(",") for line in (root / "gene_medians.csv").read_text().splitlines()[1:])
    expected = {}
    for path in corpus:
        adata = ad.read_h5ad(path)
        tokens = np.array([vocab.get(g, -1) for g in adata.var.index])
        med = np.array([float(medians[g]) if g in medians else np.nan for g in adata.var.index])
        X = adata.X.toarray()
        for i, name in enumerate(adata.obs.index):
            got = reference_tokens(X[i], tokens, med)
            if len(got):
                expected[f"{path.stem}:{name}"] = got
    return expected


@pytest.mark.parametrize("fmt", ["zarr", "webdataset"])
def test_round_trip_with_stock_readers_matches_oracle(fmt, corpus, zarr_set, wds_set):
    root = zarr_set if fmt == "zarr" else wds_set
    cells = _read_zarr_set(root) if fmt == "zarr" else _read_wds_set(root)
    expected = _oracle(corpus, root)
    assert set(cells) == set(expected)  # every cell exactly once
    for cell_id in list(expected)[::7]:
        genes, counts, meta = cells[cell_id]
        assert genes.dtype == np.int32 and counts.dtype == np.int32
        np.testing.assert_array_equal(genes, expected[cell_id])
        assert meta["n_genes"] == len(genes) and meta["n_counts"] >= counts.sum()
    manifest = load_manifest(root)
    assert manifest["n_cells"] == len(cells)
    assert manifest["n_tokens"] == sum(len(g) for g, _, _ in cells.values())


def test_shards_mix_datasets_and_splits_keep_donors_whole(zarr_set):
    cells = _read_zarr_set(zarr_set)
    manifest = load_manifest(zarr_set)
    train_datasets = {m["dataset_id"] for _, _, m in cells.values() if m["split"] == "train"}
    for shard in manifest["shards"]:
        if shard["split"] == "train":  # the global shuffle reaches every shard of a split
            datasets = set(pq.read_table(zarr_set / shard["files"][0]["path"])["dataset_id"].to_pylist())
            assert datasets == train_datasets and len(datasets) > 1, shard["path"]
    donor_split: dict[str, set] = {}
    for _, _, meta in cells.values():
        donor_split.setdefault(meta["donor_id"], set()).add(meta["split"])
    assert all(len(s) == 1 for s in donor_split.values())
    assert {next(iter(s)) for s in donor_split.values()} == {"train", "val"}
    assert manifest["splits"]["val"]["n_cells"] > 0
    sizes = [s["n_cells"] for s in manifest["shards"] if s["split"] == "train"]
    assert max(sizes) - min(sizes) <= 1  # balanced shard sizes


def test_tar_headers_are_deterministic(wds_set):
    manifest = load_manifest(wds_set)
    with tarfile.open(wds_set / manifest["shards"][0]["path"]) as tar:
        members = tar.getmembers()
    assert [m.name for m in members[:3]] == [
        "c000000000000.genes.npy",
        "c000000000000.counts.npy",
        "c000000000000.json",
    ]
    assert {(m.mtime, m.uid, m.gid, m.uname, m.gname) for m in members} == {(0, 0, 0, "", "")}


def test_wds_sidecar_indexes_samples(wds_set):
    from shards.format.webdataset import read_idx, read_samples

    shard = load_manifest(wds_set)["shards"][1]
    idx = read_idx(wds_set / shard["files"][0]["path"])
    assert idx.shape == (shard["n_cells"], 4)
    samples = read_samples(wds_set / shard["path"], idx, 5, 9)
    with tarfile.open(wds_set / shard["path"]) as tar:
        member = tar.extractfile(f"c{shard['first_cell'] + 6:012d}.genes.npy")
        np.testing.assert_array_equal(np.load(io.BytesIO(member.read())), samples[1][0])
    assert [len(s[0]) for s in samples] == idx[5:9, 2].tolist()


def test_manifest_matches_schema_and_schema_rejects_bad(zarr_set):
    manifest = json.loads((zarr_set / "index.json").read_text())
    jsonschema.validate(manifest, schema())
    for key, bad in [("format", "parquet"), ("n_cells", -1), ("format_version", 99)]:
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate({**manifest, key: bad}, schema())
    vocab = read_vocab(zarr_set / "vocab.csv")
    assert vocab.special == {"<pad>": 0, "<mask>": 1, "<cls>": 2, "<eos>": 3}
    assert list(vocab.gene_ids) == sorted(vocab.gene_ids) and vocab.tokens[0] == 4


def test_workers_do_not_change_a_byte(corpus, zarr_set, tmp_path):
    small_build(corpus, tmp_path / "w2", format="zarr", val_fraction=0.3, workers=2)
    assert manifest_without_time(tmp_path / "w2") == manifest_without_time(zarr_set)


def test_rerun_of_finished_build_is_a_no_op_and_other_build_is_refused(corpus, zarr_set, capsys):
    before = (zarr_set / "index.json").read_bytes()
    small_build(corpus, zarr_set, format="zarr", val_fraction=0.3)
    assert (zarr_set / "index.json").read_bytes() == before
    code = main(["build", "--input", str(corpus[0]), "--out", str(zarr_set), "--quiet"])
    assert code == 1 and "holds a different shard set" in capsys.readouterr().err


def test_verify_and_inspect(zarr_set, tmp_path, capsys):
    assert main(["verify", str(zarr_set)]) == 0
    assert main(["inspect", str(zarr_set), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.split("OK\n", 1)[1])
    assert summary["n_cells"] == load_manifest(zarr_set)["n_cells"] and len(summary["datasets"]) == 3
    assert sum(summary["genes_per_cell_hist"]["counts"]) == summary["n_cells"]
    assert main(["verify", str(tmp_path / "nope")]) == 2


def test_missing_manifest_is_a_clear_error(tmp_path):
    with pytest.raises(ShardError, match="not a finished shard set"):
        load_manifest(tmp_path)


def test_configs_parse():
    from ingest.cli import parser

    for path in sorted((ROOT / "configs" / "ingest").glob("*.yaml")):
        keys = yaml.safe_load(path.read_text())
        command = "synth" if "synth" in path.name else "build"
        extra = ["--out", "x"] + (["--input", "x.h5ad"] if command == "build" else [])
        ns = parser().parse_args([command, "--config", str(path), *extra])
        for key, value in keys.items():
            assert ns[command][key.replace("-", "_")] == value


def test_fast_tar_headers_equal_tarfiles():
    import tarfile as tf

    from shards.format.webdataset.writer import _header

    for name, size in [("c000000000000.genes.npy", 0), ("c000000000042.json", 123), ("x" * 100, 8**11 - 1)]:
        info = tf.TarInfo(name)
        info.size, info.mtime, info.mode, info.uid, info.gid, info.uname, info.gname = size, 0, 0o644, 0, 0, "", ""
        assert _header(name.encode(), size) == info.tobuf(format=tf.USTAR_FORMAT, encoding="utf-8", errors="strict")
