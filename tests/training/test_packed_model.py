"""The model side of packing, compile and flex attention, and the model section of a training config:
a packed cell is the same cell, the compiled trunk has no graph break, flex computes what the mask
does, ``model.*`` is ``EncoderConfig``. (Apart from ``test_training_units.py`` so that pytest-xdist can
run them beside it.)"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from training import ConfigError, EncoderConfig, train_flops
from training.model.optim import OptimizerConfig, SchedulerConfig

from .test_training_units import _batch

ROOT = Path(__file__).resolve().parents[2]


def test_pad_flops_count_each_cell_once_padded_or_packed():
    """``perf/pad_flops_frac``'s pad-free FLOPs come from each cell's own length, so a packed batch and its
    padded twin have the same (and no pad-free FLOPs exceed what is computed)."""
    from shards.loading.packing import pack_batch, plan_packing
    from training.fit.callbacks import _squares
    from training.model.flops import real_flops

    ids, mask, labels = _batch(b=9, n=24, vocab=60, seed=3)
    padded = {"input_ids": ids, "attention_mask": mask, "labels": labels, "loss_weight": torch.ones(9)}
    sizes = mask.sum(1)
    plan = plan_packing(sizes.numpy(), 40)
    packed = pack_batch(
        padded, torch.from_numpy(plan.row), torch.from_numpy(plan.start), sizes, plan.rows, plan.width, 0
    )
    assert _squares(packed).item() == _squares(padded).item() == float((sizes.double() ** 2).sum())
    cfg = EncoderConfig(vocab_size=60, d_model=16, n_layers=2, n_heads=2, max_positions=40)
    real = real_flops(cfg, float(sizes.sum()), _squares(padded).item(), 0, 9)
    assert real <= train_flops(cfg, plan.rows, plan.width, 0, cells=9) <= train_flops(cfg, 9, 24, 0)
    assert real == pytest.approx(sum(train_flops(cfg, 1, int(n), 0) for n in sizes))


@pytest.mark.parametrize("bins", [0, 7])
def test_a_packed_cell_is_the_same_cell(bins):
    """Packed (several cells per row, attention confined to each cell, positions restarting), every cell
    has the hidden states, the embedding, the masked-token logits and the cell objective it has unpacked;
    a step's sums match, so the loss is the same."""
    from shards.loading.packing import pack_batch, plan_packing
    from training.fit.module import CellshardModule

    torch.manual_seed(0)
    m = CellshardModule(
        vocab_size=60, d_model=32, n_layers=2, n_heads=4, max_positions=40, cell_loss_weight=1.0, value_bins=bins
    )
    m.eval()
    ids, mask, labels = _batch(b=9, n=24, vocab=60, seed=3)
    batch = {"input_ids": ids, "attention_mask": mask, "labels": labels, "loss_weight": torch.rand(9)}
    if bins:
        batch["values"] = torch.randint(0, bins, ids.shape) * mask
    sizes = mask.sum(1)
    plan = plan_packing(sizes.numpy(), 40)
    t = {k: torch.from_numpy(v) for k, v in (("row", plan.row), ("start", plan.start))}
    packed = pack_batch(batch, t["row"], t["start"], sizes, plan.rows, plan.width, pad_id=0)
    assert plan.rows < 9 and packed["input_ids"].shape == (plan.rows, plan.width)
    enc = m.model
    with torch.no_grad():
        flat = enc.encode(ids, mask, batch.get("values"))
        dense = enc.encode(
            packed["input_ids"], packed["attention_mask"], packed.get("values"), packed["segments"], packed["positions"]
        )
        for i in range(9):
            torch.testing.assert_close(dense[packed["segments"] == i], flat[i][mask[i]], atol=1e-5, rtol=1e-5)
        from training.model.encoder import mean_pool, packed_gene_positions, packed_mean_pool

        keep = packed_gene_positions(packed["segments"], packed["positions"])
        torch.testing.assert_close(
            packed_mean_pool(dense, packed["segments"], keep, 9), mean_pool(flat, mask), atol=1e-5, rtol=1e-5
        )
        _, _, a = m._sums(batch)
        _, _, b = m._sums(packed)
    torch.testing.assert_close(a.values, b.values, atol=1e-4, rtol=1e-5)
    assert a.cell_weight > 0 and a.token_weight > 0


def test_the_compiled_trunk_gives_the_eager_losses_padded_and_packed_without_graph_breaks():
    """``model.compile``: the trunk compiled on CPU gives the eager step sums (padded and packed batches)
    within float tolerance, with no graph break (the heads' data-dependent shapes stay eager) and the
    same state-dict names."""
    from torch._dynamo.utils import counters

    from shards.loading.packing import pack_batch, plan_packing
    from training.fit.module import CellshardModule

    torch.manual_seed(0)
    m = CellshardModule(vocab_size=60, d_model=32, n_layers=2, n_heads=4, max_positions=40, cell_loss_weight=1.0)
    ids, mask, labels = _batch(b=9, n=24, vocab=60, seed=5)
    padded = {"input_ids": ids, "attention_mask": mask, "labels": labels, "loss_weight": torch.ones(9)}
    plan = plan_packing(mask.sum(1).numpy(), 40)
    packed = pack_batch(
        padded, torch.from_numpy(plan.row), torch.from_numpy(plan.start), mask.sum(1), plan.rows, plan.width, 0
    )
    keys = list(m.state_dict())
    eager = [m._sums(b)[2].values for b in (padded, packed)]
    torch._dynamo.reset()
    counters.clear()
    m.model.compile_trunk()
    compiled = [m._sums(b)[2].values for b in (padded, packed)]
    assert sum(counters["graph_break"].values()) == 0, dict(counters["graph_break"])
    assert counters["stats"]["unique_graphs"] >= 1  # it did compile
    for a, b in zip(eager, compiled, strict=True):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-5)
    assert list(m.state_dict()) == keys


def test_flex_attention_computes_what_the_block_diagonal_mask_does_and_refuses_cpu_training():
    """``model.attention: flex`` (block-sparse attention inside each packed cell) gives the SDPA path's
    sums on packed batches; on CPU, where FlexAttention has no backward, training is refused in one line
    naming the option (it still embeds)."""
    from shards.loading.packing import pack_batch, plan_packing
    from training.fit.module import CellshardModule

    ids, mask, labels = _batch(b=9, n=24, vocab=60, seed=3)
    batch = {"input_ids": ids, "attention_mask": mask, "labels": labels, "loss_weight": torch.ones(9)}
    plan = plan_packing(mask.sum(1).numpy(), 40)
    rows, starts = torch.from_numpy(plan.row), torch.from_numpy(plan.start)
    packed = pack_batch(batch, rows, starts, mask.sum(1), plan.rows, plan.width, 0)
    sums = {}
    for attention in ("sdpa", "flex"):
        torch.manual_seed(0)
        kw = {"d_model": 32, "n_layers": 2, "n_heads": 4, "max_positions": 40, "cell_loss_weight": 1.0}
        m = CellshardModule(vocab_size=60, attention=attention, **kw)
        with torch.no_grad():
            sums[attention] = m._sums(packed)[2].values
    torch.testing.assert_close(sums["sdpa"], sums["flex"], atol=1e-4, rtol=1e-5)
    with pytest.raises(ValueError, match="attention=flex trains on CUDA only"):
        m._sums(packed)
    with pytest.raises(ConfigError, match=r"attention=flex takes no dropout: set model\.dropout 0"):
        CellshardModule(vocab_size=60, attention="flex", dropout=0.1)


def test_the_model_section_is_the_encoder_config(zarr_set, tmp_path, monkeypatch):
    """``model.*`` keys, defaults and help come from ``EncoderConfig`` (declared once); the module builds
    its encoder from them; a mistyped or derived key is one line naming the key (and the closest one)."""
    import dataclasses

    from shards.options import attribute_docs
    from training.fit.cli import CellshardCLI
    from training.fit.module import CellshardModule, encoder_config

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.argv", ["python -m training"])
    args = ["--config", str(ROOT / "configs/train/tiny.yaml"), "--data.path", str(zarr_set)]
    cli = CellshardCLI(args=[*args, "--data.num_workers", "0", "--model.norm_eps", "1e-6"], run=False)
    assert cli.model.cfg.norm_eps == 1e-6  # a field only EncoderConfig declares reaches the model
    actions = {a.dest: a for a in cli._command_parsers[0]._actions}
    linked = {"vocab_size", "max_positions", "value_bins", "cell_head"}
    for field in dataclasses.fields(EncoderConfig):
        if field.name not in linked:
            action = actions[f"model.{field.name}"]
            assert action.default == field.default and attribute_docs(EncoderConfig)[field.name] in " ".join(
                action.help.split()
            )
    assert cli.model.cfg == encoder_config(
        False,
        **{
            k: getattr(cli.model.cfg, k)
            for k in ("vocab_size", "d_model", "n_layers", "n_heads", "max_positions", "norm_eps")
        },
    )
    for bad, match in [
        ({"d_modle": 8}, r"model.d_modle is not an option of the model: did you mean model.d_model\?"),
        ({"cell_head": True}, r"model.cell_head follows model.cell_loss_weight"),
        ({"d_model": 15, "n_heads": 2}, r"model.d_model=15 is not divisible by n_heads=2"),
        ({"dropout": 1.0}, r"model.dropout=1.0"),
        ({"optimizer": OptimizerConfig(lr=-1.0)}, r"model.optimizer.lr=-1.0"),
        ({"scheduler": SchedulerConfig(min_lr_ratio=2.0)}, r"model.scheduler.min_lr_ratio=2.0"),
    ]:
        with pytest.raises(ConfigError, match=match):
            CellshardModule(vocab_size=40, max_positions=24, **bad)
