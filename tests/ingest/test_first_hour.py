"""A new user's own h5ad, scanpy-style: nothing silent (symbols as ids, an empty split), a dry run that
runs the build's checks, and a failed build that does not block the corrected command."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from ingest.checks import ensembl_share
from ingest.cli import main
from ingest.pipeline.workdir import WORK_DIR
from ingest.split import assign_split
from shards import load_manifest, read_vocab
from tests.conftest import write_h5ad

G, N = 40, 200


def _scanpy_style(tmp_path, obs=None, bad_row: int | None = None):
    """log-normalised X, counts in layers["counts"], symbols as var_names, Ensembl ids in var["gene_ids"]."""
    rng = np.random.default_rng(0)
    counts = rng.poisson(1.5, size=(N, G)).astype(np.float32)
    counts[:, 0] += 1
    if bad_row is not None:
        counts[bad_row, 3] = 2.5  # one normalised value among the counts
    norm = np.log1p(counts / counts.sum(1, keepdims=True) * 1e4)
    var = pd.DataFrame({"gene_ids": [f"ENSG{i:011d}" for i in range(G)]}, index=[f"GENE{i}" for i in range(G)])
    obs = (
        obs
        if obs is not None
        else pd.DataFrame({"sample": [f"s{i % 20}" for i in range(N)]}, index=[f"c{i}" for i in range(N)])
    )
    return write_h5ad(tmp_path / "mine.h5ad", norm, var=var, obs=obs, layers={"counts": counts})


def _build(path, out, *extra) -> int:
    return main(["build", "--input", str(path), "--out", str(out), "--quiet", "--cells-per-shard", "50", *extra])


def test_ensembl_share():
    assert ensembl_share(["ENSG00000141510", "ENSMUSG00000059552.3", None]) == 1.0
    assert ensembl_share(["TP53", "CD3E", "ENSG00000141510"]) == pytest.approx(1 / 3)


def test_symbols_as_gene_ids_are_refused_naming_the_id_column(tmp_path, capsys):
    path = _scanpy_style(tmp_path)
    assert _build(path, tmp_path / "a", "--layer", "counts", "--split-by", "sample", "--val-fraction", "0.2") == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "do not look like Ensembl stable ids (e.g. GENE0, GENE1, GENE2)" in err[0]
    assert "--gene-id-column gene_ids" in err[0]
    assert not (tmp_path / "a").exists()
    # intended symbols: the user says so
    assert _build(path, tmp_path / "b", "--layer", "counts", "--allow-non-ensembl-ids") == 0
    assert read_vocab(tmp_path / "b" / "vocab.csv").gene_ids[0] == "GENE0"


@pytest.mark.parametrize("dtype", ["category", "string"])
def test_the_hint_finds_ensembl_ids_in_categorical_and_string_var_columns(tmp_path, capsys, dtype):
    """h5ad files keep many var string columns as categoricals (scanpy's ``gene_ids``): the hint names
    them too, not only object columns."""
    import anndata as ad

    path = _scanpy_style(tmp_path)
    a = ad.read_h5ad(path)
    a.var["gene_ids"] = a.var["gene_ids"].astype(dtype)
    with ad.settings.override(allow_write_nullable_strings=True):  # pandas' string dtype, as anndata >= 0.11 writes
        a.write_h5ad(path)
    assert _build(path, tmp_path / "a", "--layer", "counts", "--split-by", "sample", "--val-fraction", "0.2") == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--gene-id-column gene_ids" in err[0], err


def test_a_skewed_split_is_a_warning_and_the_build_says_what_it_kept(tmp_path):
    """A split by a column of uneven groups: the realised val share above 1.5x the asked fraction is a
    warning naming the key count and the largest key; the dry run reports the realised split; the build
    ends with what it kept and dropped (cells, genes) and the split it made."""
    from tests.conftest import run_cli

    keys = ["big" if i < int(0.6 * N) else f"s{i % 9}" for i in range(N)]
    seed = next(s for s in range(200) if assign_split(np.array(["big"], dtype=object), s, 0.1)[0])
    obs = pd.DataFrame({"sample": keys}, index=[f"c{i}" for i in range(N)])
    path = _scanpy_style(tmp_path, obs=obs)
    args = ["--input", str(path), "--layer", "counts", "--gene-id-column", "gene_ids", "--split-by", "sample"]
    args += ["--val-fraction", "0.1", "--seed", str(seed), "--cells-per-shard", "50"]
    dry = run_cli("build", *args, "--out", str(tmp_path / "o"), "--dry-run")
    assert dry.returncode == 0, dry.stderr
    warning = [line for line in dry.stderr.splitlines() if line.startswith("warning:")]
    assert len(warning) == 1 and "10 sample value(s)" in warning[0] and "'big'" in warning[0], dry.stderr
    split = json.loads(dry.stdout)["split"]
    assert split["val_cells"] >= int(0.6 * N) and split["asked"] == 0.1 and split["keys"] == 10
    built = run_cli("build", *args, "--out", str(tmp_path / "o"))
    assert built.returncode == 0, built.stderr
    assert f"cells: {N:,} kept of {N:,}; dropped: none" in built.stderr
    assert f"val {split['val_cells']:,} (" in built.stderr and "asked 10.0%" in built.stderr


def test_any_obs_column_splits_and_the_split_is_what_was_asked(tmp_path):
    path = _scanpy_style(tmp_path)
    out = tmp_path / "o"
    args = ("--layer", "counts", "--gene-id-column", "gene_ids", "--split-by", "sample", "--val-fraction", "0.25")
    assert _build(path, out, *args) == 0
    m = load_manifest(out)
    val = (
        m["splits"]["val"]["n_cells"]
        if "splits" in m
        else sum(s["n_cells"] for s in m["shards"] if s["split"] == "val")
    )
    expected = assign_split(np.array([f"s{i % 20}" for i in range(N)], dtype=object), 0, 0.25).sum()
    assert val == expected > 0


def _seed_with_empty_val(keys: list[str], fraction: float) -> int:
    for seed in range(100):
        if assign_split(np.array(keys, dtype=object), seed, fraction).sum() == 0:
            return seed
    raise AssertionError("no seed sends every key to train")


def test_an_empty_val_split_is_an_error_in_the_build_and_the_dry_run(tmp_path, capsys):
    obs = pd.DataFrame({"donor_id": [f"d{i % 2}" for i in range(N)]}, index=[f"c{i}" for i in range(N)])
    path = _scanpy_style(tmp_path, obs=obs)
    seed = _seed_with_empty_val(["d0", "d1"], 0.1)
    args = ("--layer", "counts", "--gene-id-column", "gene_ids", "--val-fraction", "0.1", "--seed", str(seed))
    messages = []
    for extra in ((), ("--dry-run",)):
        assert _build(path, tmp_path / "o", *args, *extra) == 1
        messages.append(capsys.readouterr().err.strip())
    assert messages[0] == messages[1]
    assert "sends 0 of 200 cells to val" in messages[0] and "the 2 donor_id value(s)" in messages[0]
    assert not (tmp_path / "o").exists()


def test_dry_run_reads_the_first_block_as_the_build_does(tmp_path, capsys):
    path = _scanpy_style(tmp_path, bad_row=5)
    args = ("--gene-id-column", "gene_ids", "--split-by", "cell", "--layer", "counts")
    messages = []
    for extra in (("--dry-run",), ()):
        assert _build(path, tmp_path / "o", *args, *extra) == 1
        messages.append(capsys.readouterr().err.strip())
    assert messages[0] == messages[1] and "is not integer counts (2.5 at cell 'c5'" in messages[0]


def test_a_build_failing_on_bad_input_leaves_nothing_that_blocks_the_corrected_command(tmp_path, capsys):
    """The bad value sits in the second block: preparing passes, pass 1 refuses it mid-build."""
    bad = _scanpy_style(tmp_path, bad_row=150)
    out = tmp_path / "o"
    args = ("--gene-id-column", "gene_ids", "--split-by", "cell", "--block-cells", "64", "--unit-cells", "64")
    assert _build(bad, out, *args, "--layer", "counts") == 1
    assert "is not integer counts" in capsys.readouterr().err
    assert not (out / WORK_DIR).exists() and not out.exists()
    # the corrected input (here: the row fixed), same --out: builds, no "interrupted build" refusal
    fixed = _scanpy_style(tmp_path)
    assert _build(fixed, out, *args, "--layer", "counts") == 0
    assert load_manifest(out)["n_cells"] == N


def test_publish_copies_a_verified_set_with_the_manifest_last(zarr_set, wds_set, tmp_path, monkeypatch):
    """``ingest publish``: the copy reads as the original; a rerun sends nothing; another build at the URL
    is refused without --replace; a damaged local set is refused before anything is sent."""
    import shutil
    from pathlib import Path

    import fsspec.implementations.local

    from ingest.errors import IngestError
    from ingest.publish import publish
    from shards.format.verify import verify_shard_set

    target = tmp_path / "bucket" / "set"
    order: list[str] = []
    put = fsspec.implementations.local.LocalFileSystem.put_file
    monkeypatch.setattr(
        fsspec.implementations.local.LocalFileSystem,
        "put_file",
        lambda self, lpath, rpath, **kw: (order.append(Path(rpath).name), put(self, lpath, rpath, **kw))[1],
    )
    sent = publish(zarr_set, f"file://{target}")
    assert sent == len(order) > 2 and order[-1] == "index.json" and "index.json" not in order[:-1]
    assert verify_shard_set(target) == []
    assert publish(zarr_set, f"file://{target}") == 0  # already there
    with pytest.raises(IngestError, match="holds another shard set"):
        publish(wds_set, f"file://{target}")
    assert publish(wds_set, f"file://{target}", replace=True) > 0
    assert load_manifest(target)["build_id"] == load_manifest(wds_set)["build_id"]
    damaged = tmp_path / "damaged"
    shutil.copytree(zarr_set, damaged)
    (damaged / "vocab.csv").write_text("gene_id,token\n")
    with pytest.raises(IngestError, match="fault"):
        publish(damaged, f"file://{tmp_path / 'elsewhere'}")
    assert not (tmp_path / "elsewhere").exists()


def test_scaled_or_normalized_counts_name_where_the_integers_are(tmp_path, capsys):
    """A scanpy user's X is scaled (negative values) or log-normalized: the error names the layer that
    holds integer counts, never the option already given, and says so when no matrix of the file does."""
    import anndata as ad
    import scipy.sparse as sp

    rng = np.random.default_rng(0)
    counts = sp.csr_matrix(rng.poisson(1.0, (40, 120)).astype(np.float32))
    ids = [f"ENSG{i:011d}" for i in range(120)]
    logn = counts.copy()
    logn.data = np.log1p(logn.data)
    scaled = -np.asarray(logn.todense())  # centred values: the first nonzero is negative
    obs = pd.DataFrame(index=[f"c{i}" for i in range(40)])
    with_layer = tmp_path / "layer.h5ad"
    ad.AnnData(X=scaled, obs=obs, var=pd.DataFrame(index=ids), layers={"counts": counts}).write_h5ad(with_layer)
    assert _build(with_layer, tmp_path / "o1", "--val-fraction", "0") == 1
    err = capsys.readouterr().err
    assert "X holds negative values" in err and "layers/counts holds integer counts: rerun with --layer counts" in err
    only_log = ad.AnnData(X=scaled, obs=obs, var=pd.DataFrame(index=ids))
    only_log.raw = ad.AnnData(X=logn, obs=obs, var=pd.DataFrame(index=ids))
    only_log.write_h5ad(tmp_path / "log.h5ad")
    assert _build(tmp_path / "log.h5ad", tmp_path / "o2", "--val-fraction", "0", "--use-raw") == 1
    err = capsys.readouterr().err
    assert "raw/X is not integer counts" in err and "No matrix of this file holds integer counts" in err
    assert "rerun with --use-raw" not in err
