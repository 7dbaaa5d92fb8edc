"""Every sampling mode at atlas scale, without data: what one DataLoader worker plans and holds.

``scale_sim`` checks the plain plan's invariants at 100M cells; this measures, for each mode, what a
single loader process computes before it reads a byte, at the size of the CELLxGENE Census (160M cells,
80k shards, 1,024 ranks x 8 workers): the epoch's cells (``plan.mixing`` / ``plan.epoch``), the labels
the mode needs (a per-cell code array, as ``loading.modes.grouped_exact`` holds it), and its own worker
plan (``plan.worker.plan_worker``; grouped batches: ``plan.grouping.slot_groups``). Each mode runs in a
fresh process, so its peak RSS is its own. Targets (issue: atlas scale): plan < 2 s per rank, plan
memory < 300 MB per process, and the invariants: exact draw counts, equal batch counts on every slot,
an elastic re-plan 1,024 -> 768 ranks.

Labels are drawn Zipf-like over ``classes`` values (a Census column such as ``dataset_id`` has ~1,000).

``python -m benchmarks.scale_modes --out DIR [--cells N --shards S --ranks R --workers W]``
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from shards.format.labels import LABELS_NAME, LabelCounts, read_label_counts, save_label_counts
from shards.plan import Stage, stream_positions, worker_batches
from shards.plan.drawing import StreamDraw, drawn_plan, unit_resolver
from shards.plan.epoch import plan_epoch
from shards.plan.grouping import bounded_group_batches, group_purity, slot_groups
from shards.plan.mixing import run_plan, run_start, stream_counts
from shards.plan.topology import Topology
from shards.plan.weighting import Weighting, class_weights, curriculum_alpha
from shards.plan.worker import SlotOptions, plan_worker

__all__ = ["MODES", "ModeSpec", "label_file", "run", "run_mode", "shard_sizes"]

MODES = ("plain", "sampled", "replacement", "weighted", "curriculum", "mix", "grouped", "grouped-bounded")
POOLS = (1_024, 4_096, 16_384, 65_536)  # group_pool_cells whose purity the bounded mode reports
TARGET_SECONDS, TARGET_MB = 2.0, 300.0


@dataclass(frozen=True)
class ModeSpec:
    cells: int = 160_000_000
    shards: int = 80_000
    ranks: int = 1_024
    workers: int = 8
    batch: int = 64
    elastic_ranks: int = 768
    classes: int = 1_000
    seed: int = 0
    group_pool_cells: int = 16_384


def _rss_mb() -> float:
    """Peak RSS of this process image (``VmHWM``): ``ru_maxrss`` survives ``exec`` on Linux, so a child
    started by a large parent would report the parent's peak."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _codes(n: int, classes: int, rng: np.random.Generator) -> np.ndarray:
    p = 1.0 / np.arange(1, classes + 1)
    return rng.choice(classes, size=n, p=p / p.sum()).astype(np.int32)


def label_file(spec: ModeSpec, shard_cells: np.ndarray, path: Path) -> Path:
    """A ``labels.npz`` of Zipf-distributed classes over globally shuffled shards (each shard's counts a
    multinomial draw), written as ingest writes it; made once per spec and reused by every mode."""
    if path.is_file():
        return path
    rng = np.random.default_rng([spec.seed, 99])
    p = 1.0 / np.arange(1, spec.classes + 1)
    p /= p.sum()
    indptr, codes, counts = [np.zeros(1, np.int64)], [], []
    for lo in range(0, len(shard_cells), 2048):
        block = np.stack([rng.multinomial(int(n), p) for n in shard_cells[lo : lo + 2048]])
        shard, code = np.nonzero(block)
        codes.append(code)
        counts.append(block[shard, code])
        indptr.append(indptr[-1][-1] + np.cumsum(np.count_nonzero(block, axis=1)))
    path.parent.mkdir(parents=True, exist_ok=True)
    values = [f"d{g:05d}" for g in range(spec.classes)]
    missing = np.zeros(len(shard_cells), np.int32)
    save_label_counts(
        path.parent,
        {"dataset_id": (values, np.concatenate(indptr), np.concatenate(codes), np.concatenate(counts), missing)},
    )
    return path


def _epoch_cells(mode: str, spec: ModeSpec, shard_cells: np.ndarray, labels: LabelCounts | None, epoch: int):
    """(the epoch's plan, the number of cells drawn or None): what a sampling mode's ``plan_epoch`` computes."""
    n = int(shard_cells.sum())
    if mode in ("plain", "grouped", "grouped-bounded"):
        plan, _ = plan_epoch(shard_cells, world_size=1, num_workers=0, batch_size=1, seed=spec.seed, epoch=epoch)
        return plan, None
    if mode in ("sampled", "mix"):  # uniform draws without replacement: runs, as the loader plans them
        half = len(shard_cells) // 2 if mode == "mix" else len(shard_cells)
        streams = [half, len(shard_cells) - half] if mode == "mix" else [len(shard_cells)]
        sizes = [int(shard_cells[:half].sum()), int(shard_cells[half:].sum())][: len(streams)]
        specs = [("weight", 0.7), ("weight", 0.3)] if mode == "mix" else [("natural", 1.0)]
        wanted = stream_counts(sizes, specs, n // 2 if mode == "sampled" else None)  # sampled: half an epoch
        starts = [run_start(size, np.random.default_rng([spec.seed, epoch, 2, k])) for k, size in enumerate(sizes)]
        plan = run_plan(shard_cells, streams, wanted.tolist(), starts, seed=spec.seed, epoch=epoch)
        return plan, int(wanted.sum())
    if mode in ("weighted", "curriculum"):  # as ``modes.weighted`` plans them, from the label counts
        w = Weighting("dataset_id", smoothing=1_000.0, curriculum_epochs=2 if mode == "curriculum" else 0)
        totals = labels.totals()
        per_class = class_weights(w, labels.values.astype(object), totals, "sim")
        per_class = per_class / float((per_class * totals).sum())
        alpha = curriculum_alpha(epoch + 1, w.curriculum_epochs)
        draw = StreamDraw(labels, per_class if alpha >= 1 else (1 - alpha) / n + alpha * per_class)
    else:
        draw = StreamDraw()
    plan, per_stream = drawn_plan(
        shard_cells, [len(shard_cells)], [n], [draw], replacement=mode == "replacement", seed=spec.seed, epoch=epoch
    )

    def codes_of(shard: int) -> np.ndarray:  # a shard's cells' classes, as its label counts say (checks only)
        a, b = labels.indptr[shard], labels.indptr[shard + 1]
        cells = np.repeat(labels.codes[a:b].astype(np.int64), labels.counts[a:b])
        return np.random.default_rng([spec.seed, 7, shard]).permutation(cells)

    stream_of = np.zeros(len(shard_cells), np.int64)
    resolve = unit_resolver(
        plan, per_stream, stream_of, codes_of if labels is not None else None, seed=spec.seed, epoch=epoch
    )
    return dataclasses.replace(plan, resolver=resolve), n


def cell_tokens(shard: np.ndarray, cell: np.ndarray) -> np.ndarray:
    """A cell's token count as a fixed function of (shard, cell): 300-3,600, mean ~1,400, skewed."""
    u = ((np.asarray(shard, np.int64) * 2654435761 + np.asarray(cell, np.int64) * 40503) % 65536) / 65536
    return (300 + 3300 * u**2).astype(np.int64)


def token_imbalance(plan, worker, spec: ModeSpec, ranks: int = 64) -> float:
    """Max / mean - 1 of the tokens that ``ranks`` evenly spaced ranks serve in the epoch (their slots'
    real cells; the plain slot spans, no token balancing)."""
    n = plan.n_cells
    sums = []
    for r in np.linspace(0, spec.ranks - 1, ranks).astype(int).tolist():
        total = 0
        for slot in worker.slots[r * spec.workers : (r + 1) * spec.workers]:
            at = slot.to_sequence(np.arange(slot.n_cells))
            at = at[at < n]
            shard, cell, _ = plan.locate(np.asarray(worker.seq[at]))
            total += int(cell_tokens(shard, cell).sum())
        sums.append(total)
    sums = np.asarray(sums, dtype=np.float64)
    return float(sums.max() / sums.mean() - 1)


def run_mode(mode: str, spec: ModeSpec, label_path: str | Path | None = None) -> dict[str, Any]:
    """One mode's figures, in this process (run it in a fresh one for its own peak RSS); weighted modes
    read their label counts from ``label_path`` (``label_file``)."""
    base = _rss_mb()
    shard_cells = shard_sizes(spec)
    rng = np.random.default_rng(spec.seed)
    t0 = time.perf_counter()
    codes = labels = None
    if mode == "grouped":  # grouped batches still hold every cell's group (not per shard yet)
        codes = _codes(spec.cells, spec.classes, rng)
    elif mode in ("weighted", "curriculum"):  # read as a loader reads a local labels.npz
        labels = read_label_counts(Path(label_path), "dataset_id", "sim")
    label_seconds = time.perf_counter() - t0
    options = SlotOptions(batch_size=spec.batch, seed=spec.seed, remainder="pad" if mode == "grouped" else "drop")
    topo = Topology(0, spec.ranks, 0, spec.workers)
    t0 = time.perf_counter()
    plan, counts = _epoch_cells(mode, spec, shard_cells, labels, epoch=0)
    worker = plan_worker(plan.n_cells, topo, options, epoch=0, role=0)
    grouped_batches = None
    if mode == "grouped":
        starts = np.concatenate([[0], np.cumsum(shard_cells)])
        seq_codes = plan.gather(lambda s: codes[starts[s] : starts[s + 1]])
        mine = slot_groups(seq_codes, worker.seq, worker.slots, worker.index, spec.batch, options.remainder)
        grouped_batches = mine.n_batches
    purity = None
    if mode == "grouped-bounded":  # the slot's own groups (read from the shards it serves, here drawn)
        slot = worker.slot
        at = slot.to_sequence(stream_positions(slot, slot.n_cells))
        touched = len(np.unique(plan.locate(worker.seq[at % plan.n_cells])[0]))
        slot_labels = _codes(slot.n_cells, spec.classes, rng)
        mine = bounded_group_batches(slot_labels, spec.batch, spec.group_pool_cells)
        grouped_batches = mine.n_batches
        purity = {p: group_purity(bounded_group_batches(slot_labels, spec.batch, p), slot_labels) for p in POOLS}
    plan_seconds = time.perf_counter() - t0
    plan_rss = _rss_mb() - base
    batches = {s.n_batches for s in worker.slots}
    out: dict[str, Any] = {
        "mode": mode,
        "plan_seconds": plan_seconds,
        "label_seconds": label_seconds,
        "epoch_cells": int(plan.n_cells),
        "equal_batches": len(batches) == 1,
        "batches_per_slot": grouped_batches if grouped_batches is not None else batches.pop(),
    }
    if purity is not None:
        out["purity"] = {str(p): v for p, v in purity.items()}
        out["shards_read_for_groups"] = touched
        out["pool_cells"] = spec.group_pool_cells
    if counts is not None:  # the drawn total is the plan's size
        out["exact_count"] = counts == plan.n_cells == (spec.cells // 2 if mode == "sampled" else spec.cells)
    # elastic: half the epoch on `ranks`, the rest re-planned on `elastic_ranks`
    stage = Stage(spec.ranks, spec.workers, spec.batch, options.remainder, worker.slot.n_batches * spec.workers // 2)
    t0 = time.perf_counter()
    again = plan_worker(
        plan.n_cells, Topology(0, spec.elastic_ranks, 0, spec.workers), options, epoch=0, role=0, stages=[stage]
    )
    out["elastic_seconds"] = time.perf_counter() - t0
    out["plan_rss_mb"] = plan_rss  # labels and the epoch's plan, as a loader process holds them
    out["elastic_rss_mb"] = _rss_mb() - base  # peak with an elastic re-plan on top
    out["peak_rss_mb"] = _rss_mb()
    out["meets_targets"] = bool(plan_seconds < TARGET_SECONDS and plan_rss < TARGET_MB)
    out["token_imbalance"] = token_imbalance(plan, worker, spec)  # a check, after the memory figures
    # checked independently (after the memory figure): the first stage's stream positions of every slot
    # and the re-planned sequence cover the epoch, none twice (grouped batches are served out of stream
    # order: their elastic resume is not this one, so it is not claimed)
    if not mode.startswith("grouped"):
        per_worker = worker_batches(stage.batches, spec.workers)
        served = np.concatenate(
            [s.to_sequence(stream_positions(s, per_worker[s.slot % spec.workers] * spec.batch)) for s in worker.slots]
        )
        served = served[served < plan.n_cells]
        both = np.bincount(np.concatenate([served, again.seq]), minlength=plan.n_cells)
        dropped_bound = (spec.ranks + spec.elastic_ranks) * spec.workers * spec.batch
        out["elastic_exact"] = bool(both.max() == 1 and (both == 0).sum() <= dropped_bound)
    return out


def shard_sizes(spec: ModeSpec) -> np.ndarray:
    shard_cells = np.full(spec.shards, spec.cells // spec.shards, dtype=np.int64)
    shard_cells[: spec.cells % spec.shards] += 1
    return shard_cells


def run(spec: ModeSpec, modes: tuple[str, ...] = MODES, work: Path | None = None) -> list[dict[str, Any]]:
    """Every mode in a fresh process of its own (label counts written once, under ``work``)."""
    rows = []
    work = work or Path(tempfile.gettempdir()) / f"scale-modes-{spec.cells}-{spec.shards}-{spec.classes}"
    path = label_file(spec, shard_sizes(spec), work / LABELS_NAME)
    for mode in modes:
        cmd = [sys.executable, "-m", "benchmarks.scale_modes", "--one", mode, "--spec", json.dumps(asdict(spec))]
        cmd += ["--labels", str(path)]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
        if proc.returncode != 0:
            rows.append({"mode": mode, "error": (proc.stderr.strip().splitlines() or ["?"])[-1]})
            continue
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    return rows


def _yes(value: bool | None) -> str:
    return "n/a" if value is None else "yes" if value else "NO"


def table(rows: list[dict[str, Any]], spec: ModeSpec) -> str:
    head = (
        f"{spec.cells:,} cells, {spec.shards:,} shards, {spec.ranks:,} ranks x {spec.workers} workers, batch "
        f"{spec.batch}; one worker process (rank 0, worker 0). Targets: plan < {TARGET_SECONDS:g} s, "
        f"plan memory < {TARGET_MB:g} MB.\n\n"
        "| mode | plan (s) | labels (s) | plan memory (MB) | with elastic re-plan (MB) | equal batches | "
        "exact counts | "
        f"elastic -> {spec.elastic_ranks} (s) | elastic exact | token imbalance | targets |\n"
        "|---|---:|---:|---:|---:|---|---|---:|---|---:|---|\n"
    )
    lines = []
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['mode']} | failed: {r['error']} ||||||||||")
            continue
        exact = "yes" if r.get("exact_count", True) else "NO"
        lines.append(
            f"| {r['mode']} | {r['plan_seconds']:.2f} | {r['label_seconds']:.2f} | {r['plan_rss_mb']:,.0f} | "
            f"{r['elastic_rss_mb']:,.0f} | {'yes' if r['equal_batches'] else 'NO'} | {exact} | "
            f"{r['elastic_seconds']:.2f} | {_yes(r.get('elastic_exact'))} | {100 * r['token_imbalance']:.2f}% | "
            f"{'met' if r['meets_targets'] else 'missed'} |"
        )
    text = head + "\n".join(lines) + "\n"
    for r in rows:
        if "purity" in r:
            text += (
                f"\n{r['mode']}: one slot's share of cells in a batch of their own group, by group_pool_cells "
                f"(batch {spec.batch}, {spec.classes:,} Zipf groups; the slot reads the groups of "
                f"{r['shards_read_for_groups']} shards): "
                + ", ".join(f"{int(p):,}: {v:.3f}" for p, v in r["purity"].items())
                + "\n"
            )
    return text


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.scale_modes", description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=None, help="write results.json and TABLE.md here")
    p.add_argument("--cells", type=int, default=ModeSpec.cells)
    p.add_argument("--shards", type=int, default=ModeSpec.shards)
    p.add_argument("--ranks", type=int, default=ModeSpec.ranks)
    p.add_argument("--workers", type=int, default=ModeSpec.workers)
    p.add_argument("--elastic-ranks", type=int, default=ModeSpec.elastic_ranks)
    p.add_argument("--modes", nargs="*", default=list(MODES), choices=MODES)
    p.add_argument("--one", default=None, help=argparse.SUPPRESS)
    p.add_argument("--spec", default=None, help=argparse.SUPPRESS)
    p.add_argument("--labels", default=None, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.one:
        print(json.dumps(run_mode(a.one, ModeSpec(**json.loads(a.spec)), a.labels)))
        return 0
    spec = ModeSpec(a.cells, a.shards, a.ranks, a.workers, elastic_ranks=a.elastic_ranks)
    rows = run(spec, tuple(a.modes))
    text = table(rows, spec)
    print(text)
    if a.out:
        a.out.mkdir(parents=True, exist_ok=True)
        (a.out / "results.json").write_text(json.dumps({"spec": asdict(spec), "rows": rows}, indent=1) + "\n")
        (a.out / "TABLE.md").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
