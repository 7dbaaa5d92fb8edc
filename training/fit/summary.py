"""The three lines every ``fit`` ends with: did it learn, what does its embedding read, where is the run.

1. the val loss at the last step against the frequency-only baseline (a model that reads no context
   cannot beat it on average: below it by more than ``LEARNING_MARGIN`` nats, the model uses context);
2. a linear probe of the label column on the embedding of up to ``PROBE_CELLS`` val cells, beside the
   majority class (or the ``LinearProbe`` callback's figure when it ran);
3. where the run's files are, and the command that compares it with the standard baselines.

Estimates, sized to take seconds: the baseline's gene frequencies come from the first
``BASELINE_TRAIN_CELLS`` train cells (a build shuffles cells globally) and its loss from the first
``BASELINE_VAL_BATCHES`` val batches; ``training report`` computes both on everything.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from shards.errors import CellshardError

__all__ = [
    "BASELINE_TRAIN_CELLS",
    "BASELINE_VAL_BATCHES",
    "LEARNING_MARGIN",
    "PROBE_CELLS",
    "fit_summary",
    "model_line",
]

LEARNING_MARGIN = 0.05  # nats below the frequency baseline (the report's gate uses the same margin)
PROBE_CELLS = 2_000
BASELINE_TRAIN_CELLS = 200_000
BASELINE_VAL_BATCHES = 20


def _loss_line(step: int, val: float | None, path: str | None, data: Any) -> str:
    if val is None:
        return f"fit: {step} steps; no validation (data.val_split is null): nothing tells whether it learned"
    if path is None:
        return f"fit: {step} steps; val loss {val:.3f} at step {step} (streams: `training report` has the baselines)"
    from ..evaluate.baseline import frequency_baseline

    try:
        freq = frequency_baseline(
            path,
            context_length=data.context_length,
            seed=data.config.seed,
            val_split=data.val_split,
            max_batches=BASELINE_VAL_BATCHES,
            max_train_cells=BASELINE_TRAIN_CELLS,
        )
    except (CellshardError, ValueError) as exc:
        return f"fit: {step} steps; val loss {val:.3f} at step {step} (frequency baseline not computed: {exc})"
    below = freq - val
    verdict = (
        f"below it by more than {LEARNING_MARGIN} nats: the model reads context"
        if below > LEARNING_MARGIN
        else f"not below it by more than {LEARNING_MARGIN} nats (the estimate's margin): not learning yet "
        "(more steps, or another lr)"
    )
    return (
        f"fit: {step} steps; val loss {val:.3f} at step {step} against the frequency-only baseline's "
        f"~{freq:.3f} ({below:+.3f} nats): {verdict}"
    )


def _probe_line(module: Any, trainer: Any, path: str | None, data: Any, label: str) -> str:
    done = trainer.callback_metrics.get("val/probe_accuracy")
    if done is not None:
        majority = trainer.callback_metrics.get("val/probe_majority")
        got = f"{float(done):.3f} (majority {float(majority):.3f})"
        return f"probe: a linear model reads {label} from the embedding at {got}"
    if path is None or data.val_split is None:
        return "probe: no val split to probe on"
    strategy = trainer.strategy
    if (
        "Stage3" in type(strategy).__name__
        or getattr(strategy, "zero_stage_3", False)
        or "FSDP" in type(strategy).__name__
    ):
        return "probe: not run in process (the parameters are sharded over the ranks); `training report` runs it"
    from shards.loading.readers import ShardSetReader

    from ..evaluate.embed import DEFAULT_POOLING, cell_metadata, embed_cells
    from ..evaluate.probe import linear_probe

    try:
        reader = ShardSetReader(path, data.val_split)
        ids, x = embed_cells(
            module.model,
            reader,
            context_length=data.context_length,
            pooling=DEFAULT_POOLING,
            limit=PROBE_CELLS,
            value_bins=module.model.cfg.value_bins,
            device=module.device,
        )
        meta = cell_metadata(reader, ids)
        if label not in meta.columns or meta[label].isna().all():
            return f"probe: the val cells have no {label} column"
        result = linear_probe(x, meta[label].astype(str).to_numpy(), ids)
    except (CellshardError, ValueError) as exc:
        return f"probe: not computed ({exc})"
    return (
        f"probe: a linear model reads {label} from the embedding of {result['cells']:,} val cells at "
        f"{result['accuracy']:.3f} (majority class {result['majority']:.3f}; half the cells held out)"
    )


def fit_summary(trainer: Any, module: Any, data: Any, label: str = "cell_type") -> list[str]:
    """The summary's three lines (on global rank 0, after the last validation)."""
    path = data.val_path or data.path
    val = module.last_metrics.get("val/loss") if data.val_split is not None else None
    run = Path(trainer.default_root_dir)
    return [
        _loss_line(trainer.global_step, val, path, data),
        _probe_line(module, trainer, path, data, label),
        f"run: {run} (checkpoints/last.ckpt, history.csv); the standard baselines on held-out groups: "
        f"python -m training report --run {run}",
    ]


def model_line(module: Any, data: Any) -> str:
    """The model at the start of a fit: its size, and the FLOPs of one step at the configured batch and
    context (forward and backward, padded to the context: ``model.flops.train_flops``; the throughput
    callback logs the measured rate)."""
    import torch

    from ..model.flops import train_flops

    cfg = module.cfg
    params = sum(getattr(p, "ds_numel", p.numel()) for p in torch.nn.Module.parameters(module))  # ZeRO-3: whole
    batch, length = data.config.batch_size, data.context_length
    masked = round(batch * (length - 2) * data.config.mask_prob)
    flops = train_flops(cfg, batch, length, masked)
    layout = "if padded; packed batches compute fewer rows: perf/pad_flops_frac" if data.config.pack else "padded"
    return (
        f"model: {params / 1e6:,.2f} M parameters (d_model {cfg.d_model}, {cfg.n_layers} layers, {cfg.n_heads} "
        f"heads); one step of {batch} cells x {length} tokens ~{flops / 1e9:,.1f} GFLOPs (forward + backward, "
        f"{layout})"
    )
