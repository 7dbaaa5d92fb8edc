"""Input variants (layers, raw, ids, vocab, medians) and every kind of bad input."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ingest.cli import main
from shards import load_manifest, read_vocab
from tests.conftest import run_cli, small_build, write_h5ad

G = 12


def _counts(n=30, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.poisson(2.0, size=(n, G)).astype(np.float32)
    X[:, 0] += 1  # every cell has counts
    return X


def _genes(root):
    return read_vocab(root / "vocab.csv")


def test_use_raw_layer_and_feature_id(tmp_path):
    X = _counts()
    norm = np.log1p(X / X.sum(1, keepdims=True) * 1e4)
    var = pd.DataFrame({"feature_id": [f"ENSG{i:011d}" for i in range(G)]}, index=[f"SYM{i}" for i in range(G)])
    path = write_h5ad(tmp_path / "a.h5ad", norm, var=var, raw=X, layers={"counts": X})
    for flag in (["--use-raw"], ["--layer", "counts"]):
        out = tmp_path / flag[-1].strip("-")
        assert main(["build", "--input", str(path), "--out", str(out), "--quiet", *flag]) == 0
        assert _genes(out).gene_ids[0] == "ENSG00000000000"  # feature_id wins over var.index
        assert load_manifest(out)["n_cells"] == 30


def test_zero_cells_missing_ids_and_float_noise(tmp_path):
    X = _counts()
    X[3] = 0
    X[5, 4] += 3e-7  # float noise below 1e-6 is rounded away
    ids = [f"ENSG{i:011d}" for i in range(G)]
    ids[7] = ""
    path = write_h5ad(tmp_path / "a.h5ad", X, var_index=ids)
    small_build([path], tmp_path / "o")
    m = load_manifest(tmp_path / "o")
    assert m["n_cells"] == 29 and m["counters"]["skipped_cells"]["zero_counts"] == 1
    assert m["counters"]["dropped_genes"]["missing_id"] == 1
    assert len(_genes(tmp_path / "o").gene_ids) == G - 1


def test_given_vocab_and_medians_are_kept(tmp_path):
    X = _counts()
    path = write_h5ad(tmp_path / "a.h5ad", X)
    vocab = tmp_path / "v.csv"
    rows = ["gene_id,token", "<cls>,0", "<pad>,1"] + [f"ENSG{i:011d},{100 + i}" for i in range(0, G, 2)]
    vocab.write_text("\n".join(rows) + "\n")
    medians = tmp_path / "m.csv"
    medians.write_text("gene_id,median\n" + "".join(f"ENSG{i:011d},{1 + i / 3}\n" for i in range(G)))
    small_build([path], tmp_path / "o", vocab=str(vocab), gene_medians=str(medians))
    v = _genes(tmp_path / "o")
    assert v.special == {"<cls>": 0, "<pad>": 1, "<mask>": 111, "<eos>": 112}
    m = load_manifest(tmp_path / "o")
    assert m["counters"]["dropped_genes"]["not_in_vocabulary"] == G // 2
    written = (tmp_path / "o" / "gene_medians.csv").read_text().splitlines()
    assert written[1] == f"ENSG00000000000,{1.0:.17g}" and len(written) == 1 + G // 2


def test_two_organisms_share_one_token_space(tmp_path):
    a = write_h5ad(tmp_path / "h.h5ad", _counts())
    b = write_h5ad(tmp_path / "m.h5ad", _counts(seed=1), var_index=[f"ENSMUSG{i:011d}" for i in range(G)])
    small_build([a, b], tmp_path / "o")
    ids = _genes(tmp_path / "o").gene_ids
    assert len(ids) == 2 * G and ids[0].startswith("ENSG") and ids[-1].startswith("ENSMUSG")


@pytest.mark.slow
def test_cli_entry_points(tmp_path):
    bad = run_cli("build", "--input", str(tmp_path / "x.h5ad"), "--out", str(tmp_path / "o"))
    assert bad.returncode == 1 and bad.stderr.startswith("ingest build: error:") and "Traceback" not in bad.stderr
    usage = run_cli("build", "--bogus-flag")
    assert usage.returncode == 2
    script = Path(sys.executable).with_name("ingest")  # the console script installed beside python
    listed = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0 and all(c in listed.stdout for c in ("build", "verify", "inspect", "synth"))
