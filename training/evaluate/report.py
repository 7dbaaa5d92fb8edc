"""``python -m training report --run DIR``: what a finished run achieved, against the field's baselines.

Reads the run's resolved config and ``history.csv``; computes the frequency-only baseline on the same
validation masks; embeds the val cells (or reads an h5ad written by ``embed``) and compares them with
the standard baselines on held-out donors over several donor splits (``evidence``, ``compare``). Prints
a summary and writes ``DIR/summary.json``. ``gate`` is what ``--must-beat`` checks: a win counts only
when it is larger than the comparison's own sampling error plus the recipe's seed spread.

Long because the report gathers everything a finished run has to say (losses, baselines, probe, comparison,
throughput, plots) and its gate; each part is a short function."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from shards.errors import ShardError
from shards.format.manifest import read_manifest
from shards.storage.atomic import write_bytes_atomic

from ..errors import ConfigError
from .baseline import frequency_baseline
from .compare import EMBEDDING_NAMES, SPLIT_SEEDS, Z95
from .defaults import DEMO_GATE_SPLIT_SEEDS, DEMO_SEED_SPREAD, GATE_BASELINES, LOSS_MARGIN
from .probe import linear_probe

__all__ = [
    "DEMO_GATE_SPLIT_SEEDS",
    "DEMO_SEED_SPREAD",
    "GATE_BASELINES",
    "LOSS_MARGIN",
    "baseline_shortfall",
    "format_report",
    "gate",
    "run_report",
]


def _steps(history: pd.DataFrame) -> int:
    """Optimizer steps of the run: the last training row's step + 1 (a validation at the last step is
    logged at the step count itself, one past the last training row)."""
    if not len(history):
        return 0
    trained = history.dropna(subset=["train/loss"]) if "train/loss" in history.columns else history
    return int((trained if len(trained) else history)["step"].max()) + 1


def _last(history: pd.DataFrame, column: str) -> float | None:
    if column not in history.columns:
        return None
    values = history[column].dropna()
    return float(values.iloc[-1]) if len(values) else None


def _comparison(
    run: Path,
    data: dict[str, Any],
    split: str,
    label: str,
    cells: Any,
    notes: list[str],
    group_by: str | None,
    split_seeds: tuple[int, ...],
    scvi: bool | None,
):
    """The embedding against the baselines on held-out groups (``evidence``; the report's embeddings are
    reused, not computed again), or a note."""
    from .evidence import default_group_column, evidence

    pooling = cells.uns.get("cellshard", {}).get("pooling", "cls")  # recorded by embed; cls: the old default
    if group_by is None:
        donors = cells.obs["donor_id"].nunique() if "donor_id" in cells.obs.columns else 0
        split_by = read_manifest(data["path"]).split_by
        group_by = default_group_column(donors, cells.obs.columns, split_by)
    try:
        return evidence(
            run / "checkpoints" / "last.ckpt",
            data["path"],
            split,
            label,
            pooling=pooling,
            embedded=cells,
            donor_column=group_by,
            split_seeds=split_seeds,
            scvi=scvi,
        )
    except ValueError as exc:
        notes.append(f"comparison with the baselines on held-out {group_by} groups: {exc} (choose one with --group-by)")
        return None


def compare_losses(history: pd.DataFrame, reference: str | Path) -> dict[str, Any]:
    """This run's per-step train losses against another run's (e.g. the same run without interruption)."""
    path = Path(reference) / "history.csv"
    if not path.exists():
        raise ConfigError(f"--reference {reference}: history.csv is missing; is it a finished `fit` run?")
    mine = history.set_index("step")["train/loss"].dropna()
    theirs = pd.read_csv(path).set_index("step")["train/loss"].dropna()
    common = mine.index.intersection(theirs.index)
    diff = (mine.loc[common] - theirs.loc[common]).abs()
    first = int(diff.index[diff.to_numpy() > 0][0]) if (diff > 0).any() else None
    return {
        "reference": str(reference),
        "steps_compared": len(common),
        "first_differing_step": first,
        "max_abs_difference": float(diff.max()) if len(diff) else None,
    }


def run_report(
    run: str | Path,
    embeddings: str | None = None,
    label: str = "cell_type",
    reference: str | None = None,
    *,
    group_by: str | None = None,
    split_seeds: tuple[int, ...] = SPLIT_SEEDS,
    scvi: bool | None = None,
) -> dict[str, Any]:
    """The run's summary (``summary.json``): val loss against the frequency-only baseline, the embedding
    against the standard baselines on held-out ``group_by`` groups (default: ``donor_id`` when the cells
    have several donors, else the column the set was split by) over ``split_seeds``, throughput.
    Long because it reads a run's files in order and notes each thing it cannot compute where it finds it; the
    computations themselves are the functions it calls."""
    run = Path(run)
    config_path, history_path = run / "checkpoints" / "config.yaml", run / "history.csv"
    for p in (config_path, history_path):
        if not p.exists():
            raise ConfigError(f"--run {run}: {p.name} is missing; is it a finished `python -m training fit` run?")
    cfg = yaml.safe_load(config_path.read_text())
    data = cfg["data"]
    if data.get("path") is None:
        raise ConfigError(
            f"--run {run}: trained on data.streams (a mix); `report` scores one shard set (its "
            "frequency baseline, val embeddings and probe) and does not take mixes yet"
        )
    history = pd.read_csv(history_path)
    val_loss = _last(history, "val/loss")
    val_split = data.get("val_split") or "val"
    notes: list[str] = []
    try:
        splits = read_manifest(data["path"]).splits
    except ShardError as exc:
        raise ConfigError(f"--run {run}: its shard set {data['path']} cannot be read ({exc})") from None
    has_val = val_split in splits and splits[val_split].n_cells > 0
    baseline = None
    if has_val:
        baseline = frequency_baseline(
            data["path"], context_length=data["context_length"], seed=data.get("seed", 0), val_split=val_split
        )
    else:
        notes.append(
            f"no {val_split!r} split in {data['path']}: no val loss, frequency baseline or held-out probe "
            "(build the set with --val-fraction, or pass --embeddings)"
        )
    if embeddings is None and has_val:
        from ..embedding import embed

        embeddings = str(run / "val-cells.h5ad")
        embed(str(run / "checkpoints" / "last.ckpt"), data["path"], embeddings, split="val")
    probe, untrained, cells, comparison = None, None, None, None
    if embeddings is not None:
        import anndata as ad

        cells = ad.read_h5ad(embeddings)
        if label in cells.obs.columns:
            labels = cells.obs[label].astype(str).to_numpy()
            probe = linear_probe(cells.obsm["X_cellshard"], labels, cells.obs_names.to_numpy())
            if has_val:
                comparison = _comparison(run, data, val_split, label, cells, notes, group_by, tuple(split_seeds), scvi)
                untrained = comparison["untrained"]["linear"] if comparison else None
        else:
            columns = ", ".join(c for c in cells.obs.columns if c != "split") or "none"
            notes.append(f"--label {label}: not a column of the cells' metadata (columns: {columns}); no probe")
    steady = history.dropna(subset=["perf/cells_per_sec"]).iloc[1:] if "perf/cells_per_sec" in history else history
    if "perf/cells_per_sec" not in history:
        notes.append("history.csv has no throughput columns (ThroughputMonitor off): no cells/s or data wait")
    summary = {
        "run": str(run),
        "steps": _steps(history),
        "val_loss": val_loss,
        "frequency_baseline_loss": baseline,
        "val_masked_accuracy": _last(history, "val/masked_accuracy"),
        "probe_accuracy": probe["accuracy"] if probe else None,
        "majority_accuracy": probe["majority"] if probe else None,
        "untrained_probe_accuracy": untrained,
        "probe_cells": probe["cells"] if probe else 0,
        "comparison": comparison,
        "cells_per_sec": float(np.mean(steady["perf/cells_per_sec"]))
        if len(steady) and "perf/cells_per_sec" in steady
        else None,
        "data_wait_frac": float(np.mean(steady["perf/data_wait_frac"]))
        if len(steady) and "perf/data_wait_frac" in steady
        else None,
        "checkpoints": str(run / "checkpoints"),
        "history": str(history_path),
        "logs": str(run / "logs"),
        "notes": notes,
    }
    from .plots import write_plots

    pictures = write_plots(run, history, cells, label)
    summary["plots"] = {name: where for name, where in pictures.items() if where.endswith(".png")}
    notes += [f"{name}: {why}" for name, why in pictures.items() if not why.endswith(".png")]
    if reference is not None:
        summary["same_as_reference"] = compare_losses(history, reference)
    write_bytes_atomic(run / "summary.json", (json.dumps(summary, indent=1) + "\n").encode())
    return summary


def format_report(s: dict[str, Any]) -> str:
    """The summary as lines; what could not be computed is said, with why (``notes``)."""

    def pct(x: float | None) -> str:
        return "n/a" if x is None else f"{100 * x:.1f}%"

    lines = [f"run {s['run']}: {s['steps']} steps"]
    if s["val_loss"] is not None and s["frequency_baseline_loss"] is not None:
        verdict = "beats" if s["val_loss"] < s["frequency_baseline_loss"] else "does NOT beat"
        lines.append(
            f"  val loss {s['val_loss']:.3f} {verdict} the frequency-only baseline {s['frequency_baseline_loss']:.3f}"
        )
    elif s["val_loss"] is not None:
        lines.append(f"  val loss {s['val_loss']:.3f}")
    if s["probe_accuracy"] is not None:
        lines.append(
            f"  cell-type linear probe {pct(s['probe_accuracy'])} vs majority class {pct(s['majority_accuracy'])} "
            f"({s['probe_cells']} val cells, half held out by a hash of the cell id)"
        )
    lines += comparison_lines(s.get("comparison"))
    if s["cells_per_sec"] is not None:
        lines.append(
            f"  throughput {s['cells_per_sec']:.0f} cells/s, data wait {pct(s['data_wait_frac'])} of step time"
        )
    lines.append(f"  checkpoints {s['checkpoints']}  history {s['history']}  logs {s['logs']}")
    lines += [f"  plot {path}" for path in s.get("plots", {}).values()]
    lines += [f"  not computed: {note}" for note in s.get("notes", [])]
    lines += _reference_lines(s.get("same_as_reference"))
    return "\n".join(lines)


def comparison_lines(c: dict[str, Any] | None) -> list[str]:
    """The embeddings side by side (see ``compare``): means over the donor splits, the spread across
    splits and the 95% sampling interval of each accuracy."""
    if not c:
        return []
    splits = c.get("splits") or [{"held_out_cells": c["held_out_cells"], "held_out_donors": c["held_out_donors"]}]
    held = np.mean([s["held_out_cells"] for s in splits])
    group = c.get("group_by", "donor_id")
    lines = [
        f"  {c['label']} of {c['cells']} val cells, {c['donors']} {group} groups; probes fitted on half the groups, "
        f"scored on the others' ~{held:.0f} cells; mean of {len(splits)} split(s) "
        f"(± 95% sampling interval; [spread across splits]); {c['pooling']} pooling:",
        f"    {'embedding':<24} {'linear probe':>22} {'kNN (15)':>22} {group.removesuffix('_id') + ' mixing':>13}",
    ]

    def cell(r: dict[str, Any], key: str) -> str:
        text = f"{100 * r[key]:.1f}% ± {100 * r.get(key + '_ci', 0.0):.1f}"
        return f"{text} [{100 * r.get(key + '_sd', 0.0):.1f}]"

    for key, name in EMBEDDING_NAMES.items():
        if key not in c:
            continue
        r = c[key]
        lines.append(f"    {name:<24} {cell(r, 'linear'):>22} {cell(r, 'knn'):>22} {r['mixing']:>13.2f}")
    for key, why in (c.get("skipped") or {}).items():
        lines.append(f"    ({EMBEDDING_NAMES.get(key, key)}: not computed, {why})")
    for key, name in EMBEDDING_NAMES.items():
        d = c.get(key, {}).get("diff")
        if d is None:
            continue
        half = Z95 * d["se"]
        verdict = "above" if d["linear"] > half else ("below" if d["linear"] < -half else "level with")
        lines.append(
            f"    pretrained - {name}: {100 * d['linear']:+.1f} points ± {100 * Z95 * d['se']:.1f} (95%): {verdict}"
        )
    return lines


def gate(summary: dict[str, Any], must_beat: list[str], seed_spread: float = DEMO_SEED_SPREAD) -> list[str]:
    """Why the run does not beat each baseline of ``must_beat`` (empty: it beats them all).

    An embedding baseline is beaten when the mean paired difference of held-out linear-probe accuracy
    (pretrained minus baseline, over the donor splits) exceeds 1.96 x its cell-level standard error plus
    ``seed_spread`` (the recipe's run-to-run range); ``frequency`` when the val loss is below the
    frequency-only baseline's by ``LOSS_MARGIN``."""
    unknown = [b for b in must_beat if b not in GATE_BASELINES]
    if unknown:
        raise ConfigError(f"--must-beat {','.join(unknown)}: choose among {', '.join(GATE_BASELINES)}")
    c = summary.get("comparison")
    out = []
    for b in must_beat:
        if b == "frequency":
            loss, base = summary.get("val_loss"), summary.get("frequency_baseline_loss")
            if loss is None or base is None:
                out.append("frequency: no val loss or frequency baseline (the run needs a val split)")
            elif loss > base - LOSS_MARGIN:
                out.append(
                    f"frequency: val loss {loss:.3f} is not {LOSS_MARGIN} below the frequency-only baseline's "
                    f"{base:.3f}: train longer or check the recipe"
                )
            continue
        if not c:
            out.append(f"{b}: no comparison was computed (a val split with the label and a grouping column; see notes)")
            continue
        if b not in c:
            out.append(f"{b}: this baseline was not computed (scVI needs pip install 'cellshard[eval]')")
            continue
        d = c[b]["diff"]
        margin = Z95 * d["se"] + seed_spread
        if d["linear"] <= margin:
            out.append(
                f"{b}: the pretrained embedding's held-out linear probe is {100 * d['linear']:+.1f} points from "
                f"{EMBEDDING_NAMES[b]}'s ({100 * c[b]['linear']:.1f}%), short of the margin {100 * margin:.1f} "
                f"(1.96 x sampling error {100 * d['se']:.1f} + seed spread {100 * seed_spread:.1f})"
            )
    return out


def baseline_shortfall(c: dict[str, Any] | None, margin: float) -> str | None:
    """The first reason ``gate`` gives for the embedding baselines ``pca50`` and ``untrained`` with a fixed
    ``margin`` in place of the seed spread (None when it beats both)."""
    reasons = gate({"comparison": c}, ["pca50", "untrained"], seed_spread=margin)
    return reasons[0] if reasons else None


def _reference_lines(c: dict[str, Any] | None) -> list[str]:
    if c is None:
        return []
    if c["first_differing_step"] is None:
        return [f"  train loss equal, bit for bit, to {c['reference']}'s at all {c['steps_compared']} logged steps"]
    return [
        f"  train loss differs from {c['reference']}'s from step {c['first_differing_step']} on "
        f"(max |difference| {c['max_abs_difference']:.3g} over {c['steps_compared']} steps)"
    ]
