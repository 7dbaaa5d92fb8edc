"""Does packing change what a model learns? The demo recipe trained padded and packed on the same cells.

``python -m benchmarks pack-curve --data SET --out DIR`` runs ``python -m training fit --config demo``
(``configs/train/demo.yaml``: d_model 128, 2 layers, the cell objective) for ``--steps`` steps, padded
(``data.pack false``) and packed (``data.pack true``), under each of ``--seeds`` (model initialisation,
masks and epoch order), at ``--context-length`` and ``--batch-size``, and compares the loss curves:
validation loss at every validation, and the packed-minus-padded gap at the end against the spread
between seeds (padded). A run directory that already holds a finished ``history.csv`` is reused.

Also from the same runs (``history.csv``): the share of computed token slots that are pads and of
FLOPs not spent on each cell's own tokens (``perf/padding_frac``, ``perf/pad_flops_frac``) and the
CPU step time, padded against packed.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from .report import Result

__all__ = ["ratios", "run"]

ROOT = Path(__file__).resolve().parents[1]


def _fit(data: str, root: Path, steps: int, seed: int, pack: bool, context: int, batch: int, val_every: int) -> float:
    history = root / "history.csv"
    if history.exists() and pd.read_csv(history)["step"].max() >= steps - 1:  # steps are logged from 0
        return float("nan")  # a finished run: reused (its wall time is in its own log)
    cmd = [sys.executable, "-m", "training", "fit", "--config", "demo", "--data.path", data]
    cmd += ["--trainer.default_root_dir", str(root), "--trainer.max_steps", str(steps)]
    cmd += ["--trainer.val_check_interval", str(val_every), "--trainer.enable_progress_bar", "false"]
    cmd += ["--data.context_length", str(context), "--data.batch_size", str(batch)]
    cmd += ["--seed_everything", str(seed), "--data.seed", str(seed), "--data.pack", str(pack).lower()]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=ROOT, capture_output=True, text=True)
    return time.perf_counter() - t0


def run(
    data: str,
    out: Path,
    steps: int = 1500,
    seeds: tuple[int, ...] = (0, 1),
    context: int = 512,
    batch: int = 32,
    val_every: int = 250,
) -> list[Result]:
    results = []
    finals: dict[tuple[int, bool], float] = {}
    for seed in seeds:
        for pack in (False, True):
            layout = "packed" if pack else "padded"
            root = out / "runs" / f"seed{seed}-{layout}"
            wall = _fit(data, root, steps, seed, pack, context, batch, val_every)
            h = pd.read_csv(root / "history.csv")
            val = h.dropna(subset=["val/loss"])
            cfg = {"seed": seed, "pack": pack, "steps": steps, "context_length": context, "batch_size": batch}
            name = f"pack curve, seed {seed}, {layout}"
            for _, row in val.iterrows():
                step_cfg = {**cfg, "at_step": int(row["step"])}
                results.append(
                    Result("pack", name, f"val_loss_step_{int(row['step'])}", row["val/loss"], "nats", step_cfg)
                )
            finals[(seed, pack)] = float(val["val/loss"].iloc[-1])
            train = h.dropna(subset=["train/loss"])
            results.append(
                Result("pack", name, "train_loss_last_100", float(train["train/loss"].tail(10).mean()), "nats", cfg)
            )
            for metric in ("perf/padding_frac", "perf/pad_flops_frac", "perf/step_time_ms"):
                if metric in h:
                    unit = "ms" if metric.endswith("_ms") else "share"
                    value = float(h[metric].dropna().iloc[1:].mean())
                    results.append(Result("pack", name, metric.split("/")[1], value, unit, cfg))
            if wall == wall:  # not NaN: this call ran it
                results.append(Result("pack", name, "wall_s", wall, "s", cfg))
    padded = [finals[(s, False)] for s in seeds]
    spread = max(padded) - min(padded)
    gap = max(abs(finals[(s, True)] - finals[(s, False)]) for s in seeds)
    cfg = {"seeds": list(seeds), "steps": steps}
    results.append(Result("pack", "pack curve, final val loss", "seed_spread_padded", spread, "nats", cfg))
    results.append(Result("pack", "pack curve, final val loss", "max_gap_packed_vs_padded", gap, "nats", cfg))
    return results


def ratios(results: list[Result]) -> list[tuple[str, float, str]]:
    get = {(r.name, r.metric): r.value for r in results}
    name = "pack curve, final val loss"
    spread, gap = get[(name, "seed_spread_padded")], get[(name, "max_gap_packed_vs_padded")]
    return [("final val loss: largest packed-padded gap / spread between seeds", gap / max(spread, 1e-12), "<= 1")]
