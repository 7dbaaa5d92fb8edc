"""Training end to end, as a user runs it: ``python -m training`` in fresh processes, single-process
and under torchrun (two "nodes" over c10d on localhost), with DDP and DeepSpeed ZeRO."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import torch

from ingest import SynthSpec, synthesize
from tests.conftest import ROOT, small_build
from tests.shards.test_distributed import _port

TINY = str(ROOT / "configs" / "train" / "tiny.yaml")
METRICS = [
    "train/loss",
    "train/perplexity",
    "train/masked_accuracy",
    "val/loss",
    "val/perplexity",
    "val/masked_accuracy",
    "perf/cells_per_sec",
    "perf/tokens_per_sec",
    "perf/padding_frac",
    "perf/pad_flops_frac",
    "perf/step_time_ms",
    "perf/data_wait_frac",
    "train/grad_norm",
    "train/grad_clip_frac",
]


def _args(data: Path, root: Path, *extra: str, steps: int = 30) -> list[str]:
    return [
        "--config",
        TINY,
        "--data.path",
        str(data),
        "--trainer.default_root_dir",
        str(root),
        "--trainer.max_steps",
        str(steps),
        "--model.scheduler.total_steps",
        str(steps),
        "--trainer.log_every_n_steps",
        "1",
        "--trainer.enable_progress_bar",
        "false",
        *extra,
    ]


def train(*args: str, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "training", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        timeout=timeout,
    )


def ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


def torchrun_two_nodes(args: list[str], tmp: Path, module: list[str] | None = None) -> None:
    """Two "nodes" of one process each, rendezvous over c10d on localhost, both started in background."""
    endpoint = f"127.0.0.1:{_port()}"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes=2",
        "--nproc-per-node=1",
        "--rdzv-backend=c10d",
        f"--rdzv-endpoint={endpoint}",
        f"--rdzv-id={tmp.name}",
        *(module or ["-m", "training", "fit"]),
        *args,
    ]
    procs = [
        subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _ in range(2)
    ]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    for p, out in zip(procs, outs, strict=True):
        assert p.returncode == 0, out[-4000:]


def history(root: Path) -> pd.DataFrame:
    return pd.read_csv(root / "history.csv").set_index("step")


@pytest.mark.slow
def test_fit_then_exact_resume(zarr_set, tmp_path):
    full, resumed = tmp_path / "full", tmp_path / "resumed"
    ok(train("fit", *_args(zarr_set, full, "--every_n_steps", "15", "--trainer.val_check_interval", "10")))
    ckpts = full / "checkpoints"
    for name in ("last.ckpt", "step-15.ckpt", "config.yaml", "environment.json", "vocab.csv", "gene_medians.csv"):
        assert (ckpts / name).exists(), name
    assert (ckpts / "vocab.csv").read_bytes() == (zarr_set / "vocab.csv").read_bytes()
    env = json.loads((ckpts / "environment.json").read_text())
    assert {"python", "torch", "lightning", "cuda", "gpus", "world_size", "num_nodes"} <= set(env)
    h = history(full)
    assert set(METRICS) <= set(h.columns)
    assert h["train/loss"].iloc[-5:].mean() < h["train/loss"].iloc[:5].mean()  # it learns
    ok(
        train(
            "fit",
            *_args(zarr_set, resumed, "--trainer.val_check_interval", "10", "--ckpt_path", str(ckpts / "step-15.ckpt")),
        )
    )
    a, b = h["train/loss"].dropna(), history(resumed)["train/loss"].dropna()
    assert list(b.index) == list(range(15, 30))
    assert np.array_equal(a.loc[15:].to_numpy(), b.to_numpy())  # the same batches, masks and updates
    assert np.array_equal(h["val/loss"].dropna().loc[19:].to_numpy(), history(resumed)["val/loss"].dropna().to_numpy())


@pytest.mark.slow
def test_resume_with_new_context_lr_and_validation_first(zarr_set, tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    ok(train("fit", *_args(zarr_set, first, "--trainer.val_check_interval", "10", steps=10)))
    proc = ok(
        train(
            "fit",
            *_args(
                zarr_set,
                second,
                "--trainer.val_check_interval",
                "10",
                "--data.context_length",
                "200",
                "--model.resume_lr",
                "0.0005",
                "--model.resume_weight_decay",
                "0.05",
                "--validate_first",
                "true",
                "--ckpt_path",
                str(first / "checkpoints" / "last.ckpt"),
                steps=20,
            ),
        )
    )
    assert "Validate metric" in proc.stdout or "val/loss" in proc.stdout
    state = torch.load(second / "checkpoints" / "last.ckpt", weights_only=False)
    assert state["state_dict"]["model.positions.weight"].shape[0] == 200
    groups = state["optimizer_states"][0]["param_groups"]
    assert groups[0]["weight_decay"] == 0.05 and groups[1]["weight_decay"] == 0.0
    lrs = history(second)["lr-AdamW/pg1"].dropna()
    assert 0 < lrs.loc[10:].max() <= 0.0005 + 1e-12


@pytest.mark.slow
def test_vocabulary_mismatch_is_refused(zarr_set, tmp_path):
    other_corpus = synthesize(SynthSpec(cells=400, genes=700, datasets=2, seed=5), tmp_path / "other.h5ad")
    other = tmp_path / "other-set"
    small_build([p for p, _ in other_corpus], other, format="zarr", val_fraction=0.3)
    run = tmp_path / "run"
    ok(train("fit", *_args(zarr_set, run, "--data.val_split", "null", "--data.num_workers", "0", steps=3)))
    proc = train(
        "fit",
        *_args(
            other,
            tmp_path / "run2",
            "--data.num_workers",
            "0",
            "--ckpt_path",
            str(run / "checkpoints" / "last.ckpt"),
            steps=6,
        ),
    )
    assert proc.returncode == 1 and "ingest build --vocab" in proc.stderr, proc.stderr[-3000:]
    proc = train(
        "embed",
        "--ckpt",
        str(run / "checkpoints" / "last.ckpt"),
        "--data",
        str(other),
        "--out",
        str(tmp_path / "x.h5ad"),
    )
    assert proc.returncode == 1 and "vocabulary differs" in proc.stderr
    assert not (tmp_path / "x.h5ad").exists()
    proc = train("fit", *_args(zarr_set, tmp_path / "run3", "--data.val_path", str(other), steps=2))
    assert proc.returncode == 1 and "data.val_path=" in proc.stderr and "vocabulary differs" in proc.stderr


def _params(d: Path, name: str, rank: int) -> dict[str, torch.Tensor]:
    return torch.load(d / f"{name}-rank{rank}.pt")


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ddp", "deepspeed_stage_2"])
def test_two_nodes_match_one_process_with_the_same_global_batch(zarr_set, tmp_path, strategy):
    common = ["--data.val_split", "null", "--data.num_workers", "0", "--data.batch_size", "16"]
    dump = ["--trainer.callbacks+=tests.training.helpers.DumpParams"]
    run = _args(
        zarr_set,
        tmp_path / "run",
        *common,
        "--trainer.strategy",
        strategy,
        *dump,
        "--trainer.callbacks.out_dir",
        str(tmp_path / "p"),
        steps=20,
    )
    torchrun_two_nodes(run, tmp_path)
    # the reference: one process whose every batch is the union of both ranks' batches at that step
    ref = _args(
        zarr_set, tmp_path / "ref", *common, *dump, "--trainer.callbacks.out_dir", str(tmp_path / "r"), steps=20
    )
    out = subprocess.run(
        [sys.executable, "-m", "tests.training.helpers", "2", *ref],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    p0, p1 = _params(tmp_path / "p", "params", 0), _params(tmp_path / "p", "params", 1)
    init, ref_p = _params(tmp_path / "p", "init", 0), _params(tmp_path / "r", "params", 0)
    assert all(torch.equal(p0[k], p1[k]) for k in p0)  # ranks agree exactly
    assert all((p0[k] - init[k]).abs().max() > 1e-4 for k in p0 if "norm" not in k or "weight" in k)  # all moved
    # same math, different summation order (gradient all-reduce): agreement to ~1e-6 measured
    worst = max(float((p0[k] - ref_p[k]).abs().max()) for k in p0)
    assert worst < 1e-4, worst
    loss_run = history(tmp_path / "run")["train/loss"].dropna().to_numpy()
    loss_ref = history(tmp_path / "ref")["train/loss"].dropna().to_numpy()
    assert np.allclose(loss_run, loss_ref, atol=1e-5)


@pytest.mark.slow
def test_zero3_checkpoint_exports_and_embeds(zarr_set, tmp_path):
    run = _args(
        zarr_set,
        tmp_path / "run",
        "--data.num_workers",
        "0",
        "--trainer.strategy",
        "deepspeed_stage_3",
        "--trainer.val_check_interval",
        "5",
        steps=5,
    )
    torchrun_two_nodes(run, tmp_path)
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    assert last.is_dir()  # ZeRO-3 checkpoints are directories of partitions
    ok(train("export", "--ckpt", str(last), "--out", str(tmp_path / "model.pt")))
    plain = torch.load(tmp_path / "model.pt", weights_only=False)
    assert plain["encoder"]["d_model"] == 64 and "genes.weight" in plain["state_dict"]
    assert all(torch.isfinite(v).all() for v in plain["state_dict"].values())
    ok(
        train(
            "embed",
            "--ckpt",
            str(tmp_path / "model.pt"),
            "--data",
            str(zarr_set),
            "--out",
            str(tmp_path / "c.h5ad"),
            "--split",
            "val",
            "--pooling",
            "mean",
        )
    )
    cells = ad.read_h5ad(tmp_path / "c.h5ad")
    n_val = json.loads((zarr_set / "index.json").read_text())["splits"]["val"]["n_cells"]
    assert cells.obsm["X_cellshard"].shape == (n_val, 64) and "cell_type" in cells.obs
    ok(
        train(
            "embed",
            "--ckpt",
            str(last),
            "--data",
            str(zarr_set),
            "--out",
            str(tmp_path / "d.h5ad"),
            "--split",
            "val",
            "--pooling",
            "mean",
        )
    )
    assert np.allclose(ad.read_h5ad(tmp_path / "d.h5ad").obsm["X_cellshard"], cells.obsm["X_cellshard"], atol=1e-5)


@pytest.mark.slow
def test_tiny_learns_the_synthetic_corpus(zarr_set, tmp_path):
    """The demo's claims, on the test corpus: val loss below the frequency-only baseline and a cell-type
    probe above the majority class."""
    run = tmp_path / "run"
    ok(
        train(
            "fit",
            *_args(
                zarr_set,
                run,
                "--trainer.val_check_interval",
                "150",
                "--data.num_workers",
                "1",
                "--trainer.log_every_n_steps",
                "10",
                steps=150,
            ),
        )
    )
    proc = ok(train("report", "--run", str(run)))
    summary = json.loads((run / "summary.json").read_text())
    assert summary["val_loss"] < summary["frequency_baseline_loss"] - 0.1, summary
    assert summary["probe_accuracy"] > summary["majority_accuracy"] + 0.2, summary
    assert summary["cells_per_sec"] > 0 and 0 <= summary["data_wait_frac"] < 1
    assert summary["majority_accuracy"] < summary["untrained_probe_accuracy"] <= 1  # reported beside it
    assert "beats the frequency-only baseline" in proc.stdout
    # the evidence: the embedding beside PCA-50 and an untrained encoder on held-out donors, same cells
    c = summary["comparison"]
    assert c["held_out_donors"] >= 1 and c["donors"] > c["held_out_donors"]
    for name in ("pretrained", "untrained", "pca50"):
        assert 0 <= c[name]["linear"] <= 1 and 0 <= c[name]["knn"] <= 1 and 0 <= c[name]["mixing"] <= 1
    assert "PCA-50 scanpy standard" in proc.stdout and "donor mixing" in proc.stdout


@pytest.mark.slow
def test_loggers_probe_async_checkpoints_and_gene_embeddings(zarr_set, tmp_path):
    run = tmp_path / "run"
    vocab = pd.read_csv(zarr_set / "vocab.csv")
    genes = vocab[~vocab["gene_id"].str.startswith("<")]["gene_id"].head(50)
    emb = pd.DataFrame(np.full((len(genes), 64), 0.5), columns=[f"dim_{i}" for i in range(64)])
    emb.insert(0, "gene_id", genes.to_numpy())
    emb.to_csv(tmp_path / "esm.csv", index=False)
    extra = tmp_path / "extra.yaml"
    extra.write_text(
        f"""
trainer:
  logger:
    - class_path: lightning.pytorch.loggers.CSVLogger
      init_args: {{save_dir: {run}, name: logs}}
    - class_path: lightning.pytorch.loggers.TensorBoardLogger
      init_args: {{save_dir: {run}, name: tb}}
    - class_path: lightning.pytorch.loggers.WandbLogger
      init_args: {{save_dir: {run}, offline: true, project: cellshard-test}}
  callbacks:
    - class_path: training.LinearProbe
      init_args: {{every_n_steps: 5, max_cells: 400}}
    - class_path: lightning.pytorch.callbacks.EarlyStopping
      init_args: {{monitor: val/loss, patience: 3}}
"""
    )
    proc = ok(
        train(
            "fit",
            *_args(
                zarr_set,
                run,
                "--config",
                str(extra),
                "--async_checkpoint",
                "true",
                "--model.gene_embeddings",
                str(tmp_path / "esm.csv"),
                "--data.num_workers",
                "0",
                "--trainer.val_check_interval",
                "10",  # batches, not steps: with accumulation over 2 a validation every 5 steps
                "--trainer.accumulate_grad_batches",
                "2",
                steps=10,
            ),
            env={"WANDB_MODE": "offline", "WANDB_SILENT": "true"},
        )
    )
    assert "initialised 50 of" in proc.stderr + proc.stdout
    assert list((run / "tb").rglob("events.out.tfevents.*"))
    assert list(run.rglob("offline-run-*"))
    h = history(run)
    assert h["val/probe_accuracy"].dropna().size == 2 and h["val/probe_majority"].dropna().size == 2
    # beside PCA-50 and an untrained encoder (computed once: the same at both probes) on held-out donors
    for name in ("pretrained", "untrained", "pca50"):
        assert h[f"val/compare_{name}_linear"].dropna().size == 2
    assert h["val/compare_pca50_linear"].dropna().nunique() == 1 == h["val/compare_untrained_knn"].dropna().nunique()
    assert (run / "checkpoints" / "last.ckpt").is_file()
    state = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    assert state["global_step"] == 10  # optimizer steps: 20 batches with accumulation over 2
    assert state["loops"]["fit_loop"]["epoch_loop.batch_progress"]["total"]["processed"] == 20
    assert any(k.startswith("EarlyStopping") for k in state["callbacks"])
