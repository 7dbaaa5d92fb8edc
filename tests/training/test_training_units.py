"""Training stage, in process: model, FLOP formula, optimizers and schedules, strategy resolution,
config files, data-module errors, embedding, probe and baseline."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from shards import read_vocab
from shards.loading.readers import ShardSetReader
from training import CellEncoder, ConfigError, EncoderConfig, train_flops
from training.evaluate.baseline import frequency_baseline
from training.evaluate.embed import embed_cells, pool
from training.evaluate.probe import linear_probe
from training.fit.data import CellDataModule
from training.fit.module import load_gene_embeddings
from training.fit.strategies import CPUDeepSpeedStrategy, launcher_topology, resolve_trainer_options
from training.model import extend_positions
from training.model.flops import peak_flops
from training.model.optim import OptimizerConfig, SchedulerConfig, build_optimizer, build_scheduler

ROOT = Path(__file__).resolve().parents[2]


def _batch(b=4, n=20, vocab=50, seed=0):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(5, n + 1, (b,), generator=g)
    ids = torch.randint(4, vocab, (b, n), generator=g)
    mask = torch.arange(n)[None] < lengths[:, None]
    labels = torch.where(mask & (torch.rand(b, n, generator=g) < 0.3), ids, torch.full_like(ids, -100))
    return ids, mask, labels


# -- model -------------------------------------------------------------------------------------------
def test_flop_formula_matches_flop_counter():
    cfg = EncoderConfig(vocab_size=300, d_model=32, n_layers=3, n_heads=4, d_ff=80, max_positions=64)
    model = CellEncoder(cfg)
    ids, mask, labels = _batch(b=3, n=24, vocab=300)
    # the CPU's fused attention kernel is not registered with the FLOP counter; the math backend runs
    # the same matmuls as bmm, which it counts
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        logits, _ = model(ids, mask, labels)
        torch.nn.functional.cross_entropy(logits, labels[labels >= 0]).backward()
    expected = train_flops(cfg, 3, 24, int((labels >= 0).sum()))
    assert counter.get_total_flops() == pytest.approx(expected, rel=0.01)


def test_flop_formula_matches_flop_counter_with_cell_head():
    cell_head = True  # without it: test_flop_formula_matches_flop_counter
    cfg = EncoderConfig(vocab_size=300, d_model=32, n_layers=2, n_heads=4, max_positions=64, cell_head=cell_head)
    model = CellEncoder(cfg)
    ids, mask, labels = _batch(b=3, n=24, vocab=300)
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        out = model(ids, mask, labels)
        loss = torch.nn.functional.cross_entropy(out[0], labels[labels >= 0])
        (loss + out[2].sum() if cell_head else loss).backward()
    assert len(out) == (3 if cell_head else 2)
    expected = train_flops(cfg, 3, 24, int((labels >= 0).sum()))
    assert counter.get_total_flops() == pytest.approx(expected, rel=0.01)


def test_cell_objective_scores_each_cells_own_genes():
    """``cell_gene_nll``: per cell, the mean -log p of its genes (masked ones by their label), over gene
    positions only (not <cls>, <eos> or pads), checked against a loop; ``mean_pool`` skips the same."""
    from training.model.encoder import cell_gene_nll, gene_positions, mean_pool

    g = torch.Generator().manual_seed(0)
    ids = torch.tensor([[2, 10, 11, 1, 3, 0], [2, 12, 1, 13, 14, 3]])  # <cls> genes (<mask>=1) <eos> <pad>
    mask = ids != 0
    labels = torch.full_like(ids, -100)
    labels[0, 3], labels[1, 2] = 15, 16
    logits = torch.randn(2, 20, generator=g)
    logp = torch.log_softmax(logits, -1)
    expect = torch.stack([-(logp[0, [10, 11, 15]]).mean(), -(logp[1, [12, 16, 13, 14]]).mean()])
    assert torch.allclose(cell_gene_nll(logits, ids, mask, labels), expect)
    assert gene_positions(mask).sum(1).tolist() == [3, 4]
    hidden = torch.randn(2, 6, 4, generator=g)
    assert torch.allclose(mean_pool(hidden, mask)[0], hidden[0, 1:4].mean(0))
    assert torch.allclose(mean_pool(hidden, mask)[1], hidden[1, 1:5].mean(0))


@pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`")
def test_cell_objective_trains_the_pooled_embedding():
    """With ``model.cell_loss_weight`` the loss has a cell term whose gradient reaches the cell head and
    the gene embedding; a negative weight is refused with the option's name."""
    from training.fit.module import CellshardModule

    with pytest.raises(ConfigError, match=r"model.cell_loss_weight"):
        CellshardModule(vocab_size=40, d_model=16, n_layers=1, n_heads=2, max_positions=24, cell_loss_weight=-1.0)
    m = CellshardModule(vocab_size=40, d_model=16, n_layers=1, n_heads=2, max_positions=24, cell_loss_weight=2.0)
    ids, mask, labels = _batch(b=4, n=24, vocab=40)
    batch = {"input_ids": ids, "attention_mask": mask, "labels": labels, "loss_weight": torch.ones(4)}
    num, cell, stats = m._sums(batch)
    assert cell.item() > 0 and stats.cell_weight.item() == 4.0 and stats.cell_loss.item() == pytest.approx(cell.item())
    loss = m.training_step(batch, 0)
    assert loss.item() == pytest.approx((num / stats.token_weight + 2.0 * cell / 4).item(), rel=1e-5)
    loss.backward()
    assert m.model.cell_transform.weight.grad.abs().sum() > 0 and m.model.cell_bias.grad.abs().sum() > 0
    off = CellshardModule(vocab_size=40, d_model=16, n_layers=1, n_heads=2, max_positions=24)
    assert not hasattr(off.model, "cell_transform") and off._sums(batch)[2].cell_weight.item() == 0.0


def test_padding_does_not_change_real_positions():
    cfg = EncoderConfig(vocab_size=50, d_model=16, n_layers=2, n_heads=2, max_positions=40)
    model = CellEncoder(cfg).eval()
    ids, mask, _ = _batch(b=3, n=20)
    wide_ids = torch.cat([ids, torch.zeros(3, 10, dtype=ids.dtype)], 1)
    wide_mask = torch.cat([mask, torch.zeros(3, 10, dtype=torch.bool)], 1)
    a, b = model.encode(ids, mask), model.encode(wide_ids, wide_mask)[:, :20]
    assert torch.allclose(a[mask], b[mask], atol=1e-5)
    # and a padded position's content cannot leak into real ones
    wide_ids[:, 25] = 7
    assert torch.allclose(model.encode(wide_ids, wide_mask)[:, :20][mask], b[mask], atol=1e-6)


def test_value_bins_are_required_when_configured():
    model = CellEncoder(EncoderConfig(vocab_size=50, d_model=16, n_layers=1, n_heads=2, max_positions=20, value_bins=5))
    ids, mask, labels = _batch(n=20)
    with pytest.raises(ValueError, match=r"value bins"):
        model(ids, mask, labels)
    logits, _ = model(ids, mask, labels, torch.randint(0, 5, ids.shape))
    assert logits.shape == (int((labels >= 0).sum()), 50)


def test_extend_positions_keeps_learned_rows():
    w = torch.randn(10, 4)
    ext = extend_positions(w, 16, "extend")
    assert torch.equal(ext[:10], w) and torch.equal(ext[15], w[9])
    inter = extend_positions(w, 18, "interpolate")  # 9 gene rows stretched over 17
    assert inter.shape == (18, 4) and torch.equal(inter[0], w[0]) and torch.allclose(inter[-1], w[-1])
    assert torch.allclose(inter[1::2], w[1:], atol=1e-6)  # the learned rows land on every other new row
    assert torch.equal(extend_positions(w, 6), w[:6])


def test_gene_embeddings_from_csv(zarr_set, tmp_path):
    vocab = read_vocab(zarr_set / "vocab.csv")
    model = CellEncoder(EncoderConfig(vocab_size=vocab.size, d_model=8, n_layers=1, n_heads=2, max_positions=16))
    genes = [*vocab.gene_ids[:5], "ENSG_NOT_IN_VOCAB"]
    table = pd.DataFrame(np.arange(48, dtype=float).reshape(6, 8), columns=[f"dim_{i}" for i in range(8)])
    table.insert(0, "gene_id", genes)
    table.to_csv(tmp_path / "emb.csv", index=False)
    assert load_gene_embeddings(model, tmp_path / "emb.csv", vocab) == 5
    assert torch.equal(model.genes.weight[int(vocab.tokens[2])], torch.arange(16, 24, dtype=torch.float32))
    table.drop(columns=["dim_7"]).to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(ConfigError, match=r"model.d_model"):
        load_gene_embeddings(model, tmp_path / "bad.csv", vocab)


def test_peak_table():
    assert peak_flops("NVIDIA H100 80GB HBM3", "bf16-mixed") == pytest.approx(989.4e12)
    assert peak_flops("NVIDIA A100-SXM4-80GB", "bf16-mixed") == pytest.approx(312e12)
    assert peak_flops("NVIDIA H200", "bf16-mixed") == pytest.approx(989.4e12)
    assert peak_flops("NVIDIA A100-SXM4-80GB", "32-true") == pytest.approx(156e12)
    assert peak_flops("Tesla T4", "bf16-mixed") is None


# -- optimizer and schedules -------------------------------------------------------------------------
def test_no_decay_groups_and_schedules():
    model = CellEncoder(EncoderConfig(vocab_size=20, d_model=8, n_layers=1, n_heads=2, max_positions=8))
    opt = build_optimizer(model, OptimizerConfig(lr=1.0, weight_decay=0.1))
    decayed = {id(p) for p in opt.param_groups[0]["params"]}
    assert id(model.blocks[0].qkv.weight) in decayed and id(model.blocks[0].qkv.bias) not in decayed
    assert id(model.norm.weight) not in decayed and id(model.positions.weight) not in decayed
    assert opt.param_groups[1]["weight_decay"] == 0.0
    sched = build_scheduler(opt, SchedulerConfig(name="cosine_warmup", warmup_steps=10, min_lr_ratio=0.1), 110)
    lrs = []
    for _ in range(110):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert lrs[60] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lrs[-1] == pytest.approx(0.1, abs=1e-3)


def test_scheduler_by_torch_class_name_with_warmup():
    model = torch.nn.Linear(2, 2)
    opt = build_optimizer(model, OptimizerConfig(lr=1.0))
    sched = build_scheduler(
        opt, SchedulerConfig(name="StepLR", warmup_steps=4, kwargs={"step_size": 2, "gamma": 0.5}), None
    )
    lrs = []
    for _ in range(10):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(0.25) and lrs[4] == pytest.approx(1.0) and lrs[6] == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("opt", "sched", "match"),
    [
        (OptimizerConfig(name="sgdx"), SchedulerConfig(), "model.optimizer.name"),
        (OptimizerConfig(), SchedulerConfig(name="NoSuchLR"), "model.scheduler.name"),
        (OptimizerConfig(), SchedulerConfig(name="StepLR", kwargs={"bogus": 1}), "model.scheduler.kwargs"),
        (OptimizerConfig(), SchedulerConfig(name="cosine"), "total_steps or trainer.max_steps"),
    ],
)
def test_bad_optimizer_and_scheduler_names(opt, sched, match):
    model = torch.nn.Linear(2, 2)
    with pytest.raises(ConfigError, match=match):
        build_scheduler(build_optimizer(model, opt), sched, None)


# -- strategies and topology -------------------------------------------------------------------------
def test_strategy_resolution_on_cpu():
    out = resolve_trainer_options({"strategy": "deepspeed_stage_3", "precision": "32-true"}, batch_size=8)
    assert (
        isinstance(out["strategy"], CPUDeepSpeedStrategy) and out["strategy"].config["zero_optimization"]["stage"] == 3
    )
    assert resolve_trainer_options({"strategy": "ddp"})["strategy"] == "ddp"
    with pytest.raises(ConfigError, match=r"trainer.strategy=.*choose"):
        resolve_trainer_options({"strategy": "horovod"})
    with pytest.raises(ConfigError, match=r"fsdp needs CUDA"):
        resolve_trainer_options({"strategy": "fsdp"})
    with pytest.raises(ConfigError, match=r"trainer.precision"):
        resolve_trainer_options({"precision": "8-bit"})
    with pytest.raises(ConfigError, match=r"needs a CUDA GPU"):
        resolve_trainer_options({"precision": "16-mixed"})
    with pytest.raises(ConfigError, match=r"deepspeed_config"):
        resolve_trainer_options({"strategy": "ddp"}, deepspeed_config="/nonexistent.json")


def test_user_deepspeed_json(tmp_path):
    cfg = tmp_path / "ds.json"
    cfg.write_text('{"zero_optimization": {"stage": 2, "overlap_comm": false}}')
    out = resolve_trainer_options({"strategy": "auto"}, deepspeed_config=str(cfg), batch_size=4)
    assert isinstance(out["strategy"], CPUDeepSpeedStrategy)


def test_nodes_come_from_the_launcher():
    env = {"WORLD_SIZE": "8", "LOCAL_WORLD_SIZE": "4"}
    assert launcher_topology(env) == (2, 4)
    out = resolve_trainer_options({"num_nodes": 1, "devices": "auto"}, env=env)
    assert out["num_nodes"] == 2 and out["devices"] == 4
    with pytest.raises(ConfigError, match=r"trainer.num_nodes=3 but the launcher started 2"):
        resolve_trainer_options({"num_nodes": 3}, env=env)
    with pytest.raises(ConfigError, match=r"trainer.devices=2"):
        resolve_trainer_options({"devices": 2}, env=env)
    assert launcher_topology({"SLURM_NNODES": "3", "SLURM_NTASKS_PER_NODE": "8", "SLURM_JOB_NAME": "pretrain"}) == (
        3,
        8,
    )
    assert launcher_topology({}) is None


# -- configs -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("config", sorted((ROOT / "configs" / "train").glob("*.yaml")), ids=lambda p: p.name)
def test_train_configs_load(config, zarr_set, tmp_path, monkeypatch):
    from training.fit.cli import CellshardCLI

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.argv", ["python -m training"])
    data = ["--data.path", str(zarr_set)]
    if "streams:" in config.read_text():  # a mix: both streams on the test set (the same token space)
        data = ["--data.streams", f"[{{path: {zarr_set}, weight: 0.6}}, {{path: {zarr_set}, weight: 0.4}}]"]
    cli = CellshardCLI(args=["--config", str(config), *data, "--data.num_workers", "0"], run=False)
    assert cli.model.cfg.vocab_size == read_vocab(zarr_set / "vocab.csv").size
    assert cli.model.cfg.max_positions == cli.datamodule.hparams.context_length
    assert cli.trainer.max_steps > 0
    # the schedule's length follows trainer.max_steps: no config pins it (a --trainer.max_steps override
    # left the pinned 300 in place, so the LR never decayed to its floor)
    assert cli.model.scheduler_cfg.total_steps is None


def test_the_schedule_follows_a_max_steps_override(zarr_set, tmp_path, monkeypatch):
    from training.fit.cli import CellshardCLI

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.argv", ["python -m training"])
    args = [
        "--config",
        str(ROOT / "configs/train/tiny.yaml"),
        "--data.path",
        str(zarr_set),
        "--trainer.max_steps",
        "50",
    ]
    cli = CellshardCLI(args=[*args, "--data.num_workers", "0"], run=False)
    cli.model.trainer = cli.trainer
    sched = cli.model.configure_optimizers()["lr_scheduler"]["scheduler"]
    floor = cli.model.scheduler_cfg.min_lr_ratio
    assert sched.lr_lambdas[0](50) == pytest.approx(floor) and sched.lr_lambdas[0](25) > floor


def test_training_help_lists_every_command():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "training", "--help"], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0
    listed = {line.split()[0] for line in out.stdout.split("commands:")[1].splitlines() if line.startswith("  ")}
    from training.tools import COMMANDS

    assert listed == {"fit", "validate", *COMMANDS} and {"embed", "export", "report"} <= set(COMMANDS)
    bad = subprocess.run([sys.executable, "-m", "training", "embd"], capture_output=True, text=True, cwd=ROOT)
    assert bad.returncode == 2 and bad.stderr.strip().splitlines() == [
        "python -m training: error: 'embd' is not a command; did you mean embed?"
    ]


@pytest.mark.parametrize("config", sorted((ROOT / "configs" / "ingest").glob("*.yaml")), ids=lambda p: p.name)
def test_ingest_configs_load(config):
    from ingest.cli import parser

    command = "synth" if "synth" in config.name else "build"
    extra = ["--out", "x.h5ad"] if command == "synth" else ["--input", "a.h5ad", "--out", "o"]
    ns = parser().parse_args([command, "--config", str(config), *extra])
    assert ns.command == command


# -- data module ---------------------------------------------------------------------------------------
def test_data_module_errors(zarr_set, wds_set, tmp_path):
    with pytest.raises(ConfigError, match=r"data.path="):
        CellDataModule(str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match=r"data.val_split='holdout'"):
        CellDataModule(str(zarr_set), val_split="holdout")
    dm = CellDataModule(str(zarr_set), val_split=None, batch_size=8, num_workers=0)
    assert dm.val_dataloader() == [] and dm.vocab_size == read_vocab(zarr_set / "vocab.csv").size
    assert set(dm.side_files()) == {"vocab.csv", "gene_medians.csv"}
    # a separate validation set with the same vocabulary (here: the same corpus as WebDataset)
    dm = CellDataModule(str(zarr_set), val_path=str(wds_set), batch_size=8, num_workers=0)
    val = dm.val_dataloader()
    assert val.dataset.reader.format == "webdataset" and val.dataset.split == "val"
    assert next(iter(val))["input_ids"].shape[0] == 8


# -- embedding, probe, baseline -----------------------------------------------------------------------
def test_embeddings_cover_the_split_in_order(zarr_set):
    reader = ShardSetReader(zarr_set, "val")
    model = CellEncoder(
        EncoderConfig(vocab_size=reader.vocab().size, d_model=16, n_layers=1, n_heads=2, max_positions=64)
    )
    ids, x = embed_cells(model, reader, context_length=64, batch_size=50)
    expected = np.concatenate([reader.metadata(i)["cell_id"].to_numpy() for i in range(len(reader.shards))])
    assert list(ids) == list(expected) and x.shape == (len(ids), 16) and np.isfinite(x).all()
    ids2, x2 = embed_cells(model, reader, context_length=64, batch_size=17, limit=100)
    assert list(ids2) == list(ids[:100]) and np.allclose(x2, x[:100], atol=1e-5)  # batching does not matter


def test_mean_pooling_skips_specials_and_padding():
    hidden = torch.arange(2 * 5 * 1, dtype=torch.float32).reshape(2, 5, 1)
    mask = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    assert pool(hidden, mask, "mean").flatten().tolist() == [1.5, 7.0]
    assert pool(hidden, mask, "cls").flatten().tolist() == [0.0, 5.0]


def test_linear_probe_reads_separable_labels():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.array(["a", "b", "c"]), 200)
    x = rng.normal(size=(600, 5)) + (labels[:, None] == np.array(["a", "b", "c"])) * 4.0 @ np.ones((3, 5)) / 3
    ids = np.array([f"cell{i}" for i in range(600)], dtype=object)
    r = linear_probe(np.c_[x, (labels == "a") * 3.0, (labels == "b") * 3.0], labels, ids)
    assert r["accuracy"] > 0.95 and r["majority"] < 0.45
    noise = linear_probe(rng.normal(size=(600, 5)), labels, ids)
    assert noise["accuracy"] < 0.5  # random features carry no label


def test_frequency_baseline_is_the_unigram_cross_entropy(zarr_set):
    loss = frequency_baseline(str(zarr_set), context_length=32, seed=0)
    reader = ShardSetReader(zarr_set, "train")
    vocab = reader.vocab()
    assert 0 < loss < math.log(vocab.size) + 1
    # a uniform predictor is worse than the corpus frequencies
    assert loss < math.log(len(vocab.gene_ids))
    # the same figure whatever the batch size (masks depend on the cell, not the batch)
    assert frequency_baseline(str(zarr_set), context_length=32, seed=0, batch_size=37) == pytest.approx(loss, rel=1e-12)
    assert frequency_baseline(str(zarr_set), context_length=32, seed=1) != loss  # other masks, other figure


def test_restart_hazard_names_the_torchrun_setting():
    from training.fit.strategies import restart_hazard

    shared = {"TORCHELASTIC_MAX_RESTARTS": "1", "TORCHELASTIC_USE_AGENT_STORE": "True"}
    assert "TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1" in restart_hazard(shared)
    assert restart_hazard({**shared, "TORCHELASTIC_USE_AGENT_STORE": "False"}) is None  # a store per round
    assert restart_hazard({**shared, "TORCHELASTIC_MAX_RESTARTS": "0"}) is None  # no restart to survive
    assert restart_hazard({}) is None


def test_a_resume_keeps_the_architecture_of_the_checkpoint_and_the_run_s_resume_keys(zarr_set, tmp_path, monkeypatch):
    """``model.*`` comes from the checkpoint's hyperparameters (Lightning's own parsing of ``ckpt_path``),
    but the keys a resume may change come from this run (our ``parse_arguments`` keeps them and
    ``before_instantiate_classes`` puts them back): fails if a Lightning upgrade changes that order."""
    from training.fit.cli import CellshardCLI

    class Stop(Exception):
        pass

    class Probe(CellshardCLI):
        def before_fit(self) -> None:
            raise Stop(self)

    ckpt = tmp_path / "fake.ckpt"
    torch.save({"hyper_parameters": {"d_model": 48, "n_layers": 1, "n_heads": 4, "resume_lr": 0.5}}, ckpt)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.argv", ["python -m training"])
    args = [
        "fit",
        "--config",
        str(ROOT / "configs" / "train" / "tiny.yaml"),
        "--data.path",
        str(zarr_set),
        "--data.num_workers",
        "0",
        "--ckpt_path",
        str(ckpt),
        "--model.resume_lr",
        "0.001",
    ]
    with pytest.raises(Stop) as stopped:
        Probe(args=args)
    model = stopped.value.args[0].model
    assert model.cfg.d_model == 48 and model.cfg.n_layers == 1  # the checkpoint's architecture
    assert model.hparams.resume_lr == 0.001  # this run's resume key, not the checkpoint's 0.5


def test_checkpoints_are_written_atomically(tmp_path):
    """Killed at the rename of a second save (a named fault point: SIGKILL, no cleanup), the first
    checkpoint is still whole under its name: a kill mid-write never leaves a truncated last.ckpt."""
    target = tmp_path / "last.ckpt"
    code = (
        "import sys, torch; from training.fit.checkpoint_io import AtomicCheckpointIO as A; io = A(); "
        f"io.save_checkpoint({{'step': 1, 'w': torch.ones(1000)}}, {str(target)!r}); "
        f"io.save_checkpoint({{'step': 2, 'w': torch.zeros(1000)}}, {str(target)!r})"
    )
    env = {**os.environ, "CELLSHARD_TEST_FAULT": "rename:last.ckpt:2"}
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, timeout=120)
    assert proc.returncode == -9, proc.stderr[-2000:]  # killed at the second rename
    assert torch.load(target, weights_only=True)["step"] == 1
    others = [p.name for p in tmp_path.iterdir() if p.name != "last.ckpt"]
    assert len(others) == 1 and others[0].startswith(".last.ckpt.tmp-")  # the killed write, under a temporary name


def test_preemption_requeues_a_slurm_job_with_scontrol(tmp_path, monkeypatch):
    from training.fit.preemption import Preemption, _slurm_job

    fake = tmp_path / "bin" / "scontrol"
    fake.parent.mkdir()
    fake.write_text(f'#!/bin/sh\necho "$@" > {tmp_path / "called"}\n')
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}:{os.environ['PATH']}")
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.delenv("SLURM_ARRAY_JOB_ID", raising=False)
    monkeypatch.setenv("SLURM_JOB_NAME", "pretrain")
    assert _slurm_job() == "4242"
    Preemption._requeue(_slurm_job())
    assert (tmp_path / "called").read_text().split() == ["requeue", "4242"]
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "77")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "3")
    assert _slurm_job() == "77_3"
    monkeypatch.setenv("SLURM_JOB_NAME", "interactive")
    assert _slurm_job() is None


def test_the_resume_line_says_exact_or_elastic():
    from shards.loading.loader import ResumeInfo
    from training.fit.callbacks import resume_line

    exact = ResumeInfo(1, 40, True, 2, 1, 32, 2, 1, 32)
    assert resume_line("r/last.ckpt", 90, 1, exact) == (
        "resuming from r/last.ckpt: step 90, epoch 1, 40 batches of epoch 1 already served per rank; the loader's "
        "plan is exact (world size 2, 1 workers per rank, batch 32, as saved)"
    )
    elastic = resume_line("r/last.ckpt", 90, 1, ResumeInfo(1, 40, False, 1, 2, 64, 2, 1, 32))
    assert "elastic: world size 2 -> 1, workers 1 -> 2, batch 32 -> 64" in elastic
    assert "afresh" in resume_line("x", 3, 0, None)


def test_progress_description_has_no_bogus_epoch_bound():
    from training.fit.progress import train_description

    assert train_description(0, -1, 5, 300) == "Epoch 0 · step 5/300"  # step-limited: was "Epoch 0/-2"
    assert train_description(2, 10, 40, -1) == "Epoch 2/9"
    assert train_description(1, None, 7, 0) == "Epoch 1"


# -- make demo's learning gate -------------------------------------------------------------------------
# The suite's longest test (a real 1,500-step pretraining, minutes). It lives in this file, the one with the
# most tests, because pytest-xdist (--dist loadfile) hands out the largest files first: here it starts at
# once and the rest of the suite runs beside it on the other worker, instead of after it.
