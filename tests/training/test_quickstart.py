"""The README's "my own h5ad" quickstart, run as it stands (its bash block, extracted from README.md),
on a scanpy-style file: build → fit → embeddings back into a copy of the user's AnnData."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from tests.conftest import ROOT


def readme_block(name: str) -> str:
    text = (ROOT / "README.md").read_text()
    m = re.search(rf"<!-- quickstart: {name} -->\n```bash\n(.*?)```", text, re.S)
    assert m, f"README.md has no quickstart block {name!r}"
    return m.group(1)


def _scanpy_style(synth: Path, out: Path) -> ad.AnnData:
    """A synthetic corpus file made to look like a scanpy user's: counts moved to a layer, X normalised,
    symbols as var_names, Ensembl ids in a column, the donor column renamed, obs_names of their own."""
    a = ad.read_h5ad(synth)
    counts = sp.csr_matrix(a.X)
    lib = np.asarray(counts.sum(1)).ravel()
    norm = sp.diags(1e4 / np.maximum(lib, 1)) @ counts
    norm.data = np.log1p(norm.data)
    var = pd.DataFrame({"gene_ids": a.var_names.to_numpy()}, index=[f"SYM{i}" for i in range(a.n_vars)])
    obs = pd.DataFrame(
        {
            "sample": [f"{d}-{i % 6}" for i, d in enumerate(a.obs["donor_id"].astype(str))],  # ~50 samples
            "cell_type": a.obs["cell_type"].astype(str).to_numpy(),
        },
        index=[f"AAAC-{i}" for i in range(a.n_obs)],
    )
    user = ad.AnnData(X=norm.astype(np.float32), obs=obs, var=var, layers={"counts": counts})
    user.write_h5ad(out)
    return user


@pytest.mark.slow
def test_readme_quickstart_own_h5ad(tmp_path):
    synth = tmp_path / "s.h5ad"
    cmd = [sys.executable, "-m", "ingest", "synth", "--cells", "3000", "--genes", "800", "--datasets", "2"]
    subprocess.run([*cmd, "--seed", "3", "--out", str(synth), "--quiet"], check=True, cwd=ROOT)
    user = _scanpy_style(next(tmp_path.glob("s*.h5ad")), tmp_path / "mine.h5ad")
    (tmp_path / "configs").symlink_to(ROOT / "configs")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", readme_block("own-h5ad")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    # quiet by default: none of Lightning's known noise (a hosted-logger tip, its own deprecation, a notice
    # about this package's design) reaches the user
    for noise in ("Tip: For seamless cloud logging", "LeafSpec", "You have overridden `on_after_batch_transfer`"):
        assert noise not in proc.stdout + proc.stderr, noise
    # the bar counts steps toward max_steps, and names no epoch bound of a step-limited run
    assert "step 60/60" in proc.stdout + proc.stderr and "/-2" not in proc.stdout + proc.stderr
    # the fit validates at its last step (val_check_interval 100 > 60 steps) and ends with three lines:
    # the val loss against the frequency baseline, a probe of cell_type, where the run is
    said = proc.stdout + proc.stderr
    assert re.search(r"fit: 60 steps; val loss \d\.\d+ at step 60 against the frequency-only baseline's ~\d", said)
    assert re.search(r"probe: a linear model reads cell_type from the embedding of [\d,]+ val cells at 0\.\d+", said)
    assert "python -m training report --run my-run" in said
    history = pd.read_csv(tmp_path / "my-run" / "history.csv")
    assert history.dropna(subset=["val/loss"])["step"].max() >= 59, history.tail()
    # Lightning's noise is gone or true: no "limit_val_batches=1.0 was configured", no "0 Total Flops"
    assert "was configured so 100%" not in said and "0         Total Flops" not in said
    # the report compares with the standard baselines on held-out groups of the user's own split column
    # (no donor_id in their file: ingest kept `sample`, the column they split by)
    summary = json.loads((tmp_path / "my-run" / "summary.json").read_text())
    c = summary["comparison"]
    assert c is not None and c["group_by"] == "sample" and len(c["splits"]) == 5, summary["notes"]
    assert {"pretrained", "pca50", "pca50_all", "untrained"} <= set(c) and "PCA-50 scanpy standard" in proc.stdout
    out = ad.read_h5ad(tmp_path / "mine-embedded.h5ad")
    # their AnnData: same cells in the same order, their obs and var, their layers, plus the embedding
    assert list(out.obs_names) == list(user.obs_names)
    pd.testing.assert_frame_equal(out.obs, user.obs)
    pd.testing.assert_frame_equal(out.var, user.var)
    assert (out.layers["counts"] != user.layers["counts"]).nnz == 0
    emb = out.obsm["X_cellshard"]
    assert emb.shape == (user.n_obs, 64) and np.isfinite(emb).all()
    # the exported model: a directory users load, whose embed(adata) gives the same rows
    model = tmp_path / "my-model"
    assert {p.name for p in model.iterdir()} == {
        "model.pt",
        "config.json",
        "vocab.csv",
        "gene_medians.csv",
        "README.md",
    }
    card = (model / "README.md").read_text()
    assert "## Training data" in card and "train/loss" in card
    import training

    encoder = training.load_encoder(model)
    again_x = encoder.embed(user, layer="counts", gene_id_column="gene_ids", device="cpu")
    np.testing.assert_allclose(again_x, emb, atol=1e-5)
    # each row is its own cell's: the same cells in another order (and a subset) get the same vectors by name
    user[::-3].copy().write_h5ad(tmp_path / "reordered.h5ad")
    again = tmp_path / "reordered-embedded.h5ad"
    embed = [sys.executable, "-m", "training", "embed", "--ckpt", "my-run/checkpoints/last.ckpt"]
    embed += ["--h5ad", "reordered.h5ad", "--layer", "counts", "--gene-id-column", "gene_ids", "--out", str(again)]
    subprocess.run(embed, cwd=tmp_path, env=env, check=True, capture_output=True, timeout=300)
    # the run directory stands for its checkpoints/last.ckpt; a near miss is told what exists
    by_run = [*embed[:4], "--ckpt", "my-run", *embed[6:-1], str(tmp_path / "by-run.h5ad")]
    subprocess.run(by_run, cwd=tmp_path, env=env, check=True, capture_output=True, timeout=300)
    np.testing.assert_allclose(
        ad.read_h5ad(tmp_path / "by-run.h5ad").obsm["X_cellshard"], ad.read_h5ad(again).obsm["X_cellshard"]
    )
    miss = [*embed[:4], "--ckpt", "my-run/last.ckpt", *embed[6:-1], str(tmp_path / "miss.h5ad")]
    wrong = subprocess.run(miss, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert wrong.returncode == 1 and "did you mean my-run/checkpoints/last.ckpt?" in wrong.stderr, wrong.stderr
    assert "DeepSpeed" not in wrong.stderr
    other = ad.read_h5ad(again)
    assert list(other.obs_names) == list(user.obs_names[::-3])
    np.testing.assert_allclose(other.obsm["X_cellshard"], out[other.obs_names].obsm["X_cellshard"], atol=1e-5)
    # from the shard set: the columns asked for, and each cell's source file and obs name, which join the
    # rows back to the user's AnnData (the same vectors as embedding their file directly)
    from_set = tmp_path / "set-embedded.h5ad"
    embed = [sys.executable, "-m", "training", "embed", "--ckpt", "my-run/checkpoints/last.ckpt", "--data"]
    embed += ["my-shards", "--obs-columns", "cell_type", "donor_id", "--out", str(from_set)]  # as ingest takes lists
    shown = subprocess.run(embed, cwd=tmp_path, env=env, check=True, capture_output=True, text=True, timeout=300)
    assert "embedding train: 100%" in shown.stderr and "embedding val: 100%" in shown.stderr  # progress bars
    cells = ad.read_h5ad(from_set)
    assert list(cells.obs.columns) == ["cell_type", "donor_id", "split", "source_file", "obs_name"]
    assert set(cells.obs["source_file"]) == {"mine.h5ad"} and set(cells.obs["split"]) == {"train", "val"}
    assert cells.n_obs == user.n_obs and set(cells.obs["obs_name"]) == set(user.obs_names)
    names = cells.obs["obs_name"].to_numpy()
    assert (cells.obs["cell_type"].to_numpy() == user.obs.loc[names, "cell_type"].to_numpy()).all()
    np.testing.assert_allclose(cells.obsm["X_cellshard"], out[names].obsm["X_cellshard"], atol=1e-5)


@pytest.mark.slow
def test_report_on_any_finished_run_says_what_it_cannot_compute(tmp_path):
    """A run on a set without a val split, and a label the cells do not have: the report still prints,
    exit 0, with one line per figure it could not compute and why (it raised before)."""
    synth = tmp_path / "s.h5ad"
    run = [sys.executable, "-m", "ingest", "synth", "--cells", "800", "--genes", "300", "--datasets", "2"]
    subprocess.run([*run, "--seed", "4", "--out", str(synth), "--quiet"], check=True, cwd=ROOT)
    build = [sys.executable, "-m", "ingest", "build", "--input", str(synth), "--out", str(tmp_path / "set"), "--quiet"]
    subprocess.run(build, check=True, cwd=ROOT)
    fit = [sys.executable, "-m", "training", "fit", "--config", "configs/train/tiny.yaml", "--data.path"]
    fit += [str(tmp_path / "set"), "--trainer.default_root_dir", str(tmp_path / "run"), "--trainer.max_steps", "12"]
    fit += ["--trainer.enable_progress_bar", "false", "--data.num_workers", "0", "--data.val_split", "null"]
    subprocess.run(fit, check=True, cwd=ROOT, capture_output=True, timeout=600)
    report = [sys.executable, "-m", "training", "report", "--run", str(tmp_path / "run")]
    out = subprocess.run(report, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "not computed: no 'val' split" in out.stdout and "Traceback" not in out.stderr
    assert f"plot {tmp_path / 'run' / 'curves.png'}" in out.stdout and (tmp_path / "run" / "throughput.png").is_file()
    assert "not computed: embeddings.png" in out.stdout
    # with embeddings of the train cells: a probe, or a clear line for a label that is not there
    cells = tmp_path / "train-cells.h5ad"
    embed = [sys.executable, "-m", "training", "embed", "--ckpt", str(tmp_path / "run/checkpoints/last.ckpt")]
    subprocess.run([*embed, "--data", str(tmp_path / "set"), "--out", str(cells)], check=True, cwd=ROOT, timeout=600)
    for label, expect in (("cell_type", "cell-type linear probe"), ("nope", "not computed: --label nope")):
        r = subprocess.run(
            [*report, "--embeddings", str(cells), "--label", label], cwd=ROOT, capture_output=True, text=True
        )
        assert r.returncode == 0 and expect in r.stdout, r.stdout + r.stderr[-2000:]
    png = (tmp_path / "run" / "embeddings.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000


def test_history_from_tensorboard_event_files(tmp_path):
    """A run logged to TensorBoard only still gets its history (two sessions: the later one wins)."""
    from lightning.pytorch.loggers import TensorBoardLogger

    from training.fit.history import load_tensorboard_history

    for version, losses in enumerate(([3.0, 2.5, 2.0], [2.2, 1.8])):
        logger = TensorBoardLogger(tmp_path, name="tb", version=version)
        first = 0 if version == 0 else 2
        for i, loss in enumerate(losses):
            logger.log_metrics({"train/loss": loss, "perf/cells_per_sec": 100.0 + i}, step=first + i)
        logger.finalize("success")
    h = load_tensorboard_history(tmp_path / "tb")
    assert h["step"].tolist() == [0, 1, 2, 3]
    np.testing.assert_allclose(h["train/loss"], [3.0, 2.5, 2.2, 1.8])


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_readme_quickstart_census_cluster_up_to_the_launch(tmp_path):
    """The README's Census-on-a-cluster block as it stands, on this machine: a Census-shaped copy on disk
    as the mirror, moto's S3 server as the bucket (``AWS_ENDPOINT_URL``), one node of two CPU ranks, and
    ``tiny`` in place of ``geneformer-10m``, a split by cell (few donors) (the only edits). Rank 1 is killed
    once mid-run: torchrun restarts both ranks from the newest checkpoint and the run finishes."""
    from moto.server import ThreadedMotoServer

    release = "2025-01-30"
    synth = [sys.executable, "-m", "ingest", "synth", "--cells", "3000", "--genes", "800", "--datasets", "3"]
    synth += ["--seed", "5", "--out", str(tmp_path / "corpus" / "c.h5ad"), "--quiet"]
    subprocess.run([*synth, "--census-out", str(tmp_path / "census" / release / "soma")], check=True, cwd=ROOT)
    (tmp_path / "configs").symlink_to(ROOT / "configs")
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    try:
        env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
        env |= {"PYTHONPATH": str(ROOT), "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}"}
        env |= {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}
        import s3fs

        bucket = f"quickstart-{tmp_path.name.lower().replace('_', '-')}"[:60]  # moto's state is per process
        s3fs.S3FileSystem(client_kwargs={"endpoint_url": env["AWS_ENDPOINT_URL"]}, key="test", secret="test").makedirs(
            bucket, exist_ok=True
        )
        env |= {"CENSUS": str(tmp_path / "census"), "SHARDS": f"s3://{bucket}/census", "RUN": str(tmp_path / "run")}
        env |= {"WORKERS": "2", "NODES": "1", "GPUS": "2", "HEAD": "127.0.0.1"}
        block = readme_block("census-cluster")
        tiny = "configs/train/tiny.yaml --trainer.max_steps 12 --every_n_steps 4 --data.num_workers 0"
        tiny += " --trainer.callbacks+=tests.training.helpers.KillAt --trainer.callbacks.step 6"
        tiny += " --trainer.callbacks.rank 1 --trainer.enable_progress_bar false"
        assert block.count("configs/train/geneformer-10m.yaml") == 1 and block.count(":29500") == 1
        block = block.replace("configs/train/geneformer-10m.yaml", tiny).replace(":29500", f":{_free_port()}")
        block = block.replace(" --census-uri", " --split-by cell --census-uri")  # 3,000 cells have few donors
        proc = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", block],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=1200,
        )
        out = proc.stdout + proc.stderr
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
        # the dry run wrote nothing; the build was published manifest and all; training read it from S3
        fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": env["AWS_ENDPOINT_URL"]}, key="test", secret="test")
        assert fs.exists(f"{bucket}/census/index.json") and "manifest last" in out
        assert "Found credentials in environment variables" not in out  # the S3 client's INFO chatter
        # the kill at step 6 restarted both ranks from the step-4 checkpoint, and the run reached step 12
        assert "checkpoints/last.ckpt: step 4, epoch 0" in out, out[-4000:]  # the restarted attempt's resume
        import torch

        last = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
        assert last["global_step"] == 12 and (tmp_path / "run" / "history.csv").is_file()
    finally:
        server.stop()
