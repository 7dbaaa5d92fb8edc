"""Training throughput on this machine, and whether the loader can keep a GPU fed.

(a) ``python -m training fit`` runs, as a user starts them, for ``tiny`` and ``geneformer-10m``: one
process, two DDP processes (torchrun) and DeepSpeed ZeRO-2 on two processes; cells/s and step time
are the ThroughputMonitor's figures (``history.csv``) after the first logging window. geneformer-10m
runs at its real context (2,048) with a small batch: on CPU a step takes seconds.

(b) Whether pretraining learns: ``demo`` (the shipped CPU recipe, ``configs/train/demo.yaml``) pretrained
for ``learn_steps`` steps, then ``training.evaluate.evidence`` on the set's val cells: linear-probe and kNN
accuracy and donor mixing of its embedding, of an untrained encoder of the same shape and of PCA-50 of
log1p-CP10k, split by donor (the figures ``training report`` prints). Needs a val split with the label and
``donor_id`` columns; a set without them gets one line on stderr and no such figures.

(c) The loader against a simulated GPU: the real ``CellDataLoader`` feeds a GPU timeline whose steps
take what an H100 (989 dense bf16 TFLOP/s) would need at 40% MFU for geneformer-10m and geneformer-106m
(the FLOP formula of ``training.model.flops`` on each batch actually served). Reported: the share of GPU time
spent idle waiting for data, and the CPU cores the loader needs per GPU (its CPU seconds per batch,
measured in process, over the simulated step time).

(d) The pads' share of computed tokens and FLOPs (``padding.run``) for the models of (c), plain,
token-budget and packed batches, on the set's depths and a census-like mix.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from shards import CellDataLoader, ShardedCellDataset
from training.model import EncoderConfig
from training.model.flops import PEAK_TFLOPS, train_flops

from .report import Result

__all__ = ["ratios", "run"]

ROOT = Path(__file__).resolve().parents[1]
H100 = PEAK_TFLOPS["h100 sxm"]["bf16"] * 1e12
MFU = 0.40
MODELS = {  # architecture, per-GPU batch and context of the configs in configs/train/
    "geneformer-10m": (dict(d_model=256, n_layers=6, n_heads=4, d_ff=512, cell_head=True), 12, 2048),
    "geneformer-106m": (dict(d_model=768, n_layers=12, n_heads=12, d_ff=3072), 8, 4096),
}


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _fit(data: Path, out: Path, config: str, procs: int, strategy: str, steps: int, extra: list[str]) -> dict:
    args = [
        "--config",
        str(ROOT / "configs" / "train" / f"{config}.yaml"),
        "--data.path",
        str(data),
        "--trainer.default_root_dir",
        str(out),
        "--trainer.max_steps",
        str(steps),
        "--data.val_split",
        "null",
        "--trainer.log_every_n_steps",
        "2",
        "--trainer.enable_progress_bar",
        "false",
        "--trainer.precision",
        "32-true",
        "--trainer.strategy",
        strategy,
        "--throughput.warmup_steps",
        "2",
        *extra,
    ]
    env = dict(os.environ)
    if procs > 1:  # one core each on this machine; oversubscribed threads would only slow both
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 2) // procs))
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc-per-node={procs}",
            "-m",
            "training",
            "fit",
            *args,
        ]
    else:
        cmd = [sys.executable, "-m", "training", "fit", *args]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env)
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    h = pd.read_csv(out / "history.csv")
    perf = h.dropna(subset=["perf/cells_per_sec"]).iloc[1:]  # the first window holds start-up
    return {
        "cells_per_sec": float(perf["perf/cells_per_sec"].mean()),
        "step_ms": float(perf["perf/step_time_ms"].mean()),
        "data_wait": float(perf["perf/data_wait_frac"].mean()),
        "wall_s": time.perf_counter() - t0,
    }


#: the rows of the learning evidence (``scvi`` is added when scvi-tools is installed)
EVIDENCE = ("pretrained", "pca50", "pca50_all", "untrained")


def _learn(data: Path, out: Path, steps: int, label: str = "cell_type", scvi: bool | None = None) -> dict | None:
    """``evidence`` of the ``demo`` recipe pretrained ``steps`` steps on ``data`` (None, said on stderr,
    without labels)."""
    from shards import ShardError
    from shards.loading.readers import ShardSetReader
    from training.evaluate.evidence import evidence

    try:
        columns = set(ShardSetReader(str(data), "val").metadata(0).columns)
    except ShardError as e:
        print(f"benchmarks train: no learning evidence: {e}", file=sys.stderr)
        return None
    missing = [c for c in (label, "donor_id") if c not in columns]
    if missing:
        print(f"benchmarks train: no learning evidence: {data} stores no {', '.join(missing)}", file=sys.stderr)
        return None
    r = _fit(data, out, "demo", 1, "auto", steps, [])
    ev = evidence(out / "checkpoints" / "last.ckpt", str(data), "val", label, scvi=scvi)
    return {**ev, "wall_s": r["wall_s"]}


def _feed(data: Path, name: str, workers: int, batches: int, collate_on: str = "host") -> dict:
    """GPU idle share while the real loader feeds a simulated GPU.

    The GPU is a timeline: a step starts when its batch is on the host and the previous step is done,
    and lasts the H100 time of that batch. The host launches a step (asynchronously, as with CUDA) and
    may run one step ahead: it fetches the next batch while the GPU computes the current one. Idle GPU
    time is what the loader failed to hide. With ``collate_on="device"`` the loader ships ragged batches;
    the padding and masking a GPU would do (``DeviceCollator``, run here on the CPU to get the batch's
    shape for its FLOPs) is taken out of the host's clock: on a GPU it is a few asynchronous launches."""
    arch, batch, context = MODELS[name]
    ds = ShardedCellDataset(data, batch_size=batch, context_length=context, rank=0, world_size=1, collate_on=collate_on)
    on_device = ds.device_collator() if collate_on == "device" else None
    cfg = EncoderConfig(vocab_size=ds.reader.vocab().size, max_positions=context, **arch)
    ds.set_epoch(1)  # the loader's CPU seconds per batch, in process, to size the cores a GPU needs
    it = iter(ds)
    next(it)
    n_cpu = min(batches, 40)
    c0 = time.process_time()
    for _ in range(n_cpu):
        next(it)
    cpu_per_batch = (time.process_time() - c0) / n_cpu
    loader = CellDataLoader(ds, num_workers=workers, **({"prefetch_factor": 4} if workers else {}))
    ds.set_epoch(0)
    it = iter(loader)
    next(it)  # worker start-up is not steady state
    idle, steps, off_clock = 0.0, [], 0.0
    t_start = gpu_free = time.perf_counter()
    for _ in range(batches):
        b = next(it)
        ready = time.perf_counter() - off_clock
        if on_device is not None:  # the GPU's share of the work, off the host's clock
            t = time.perf_counter()
            b = on_device(b)
            off_clock += time.perf_counter() - t
        idle += max(0.0, ready - gpu_free)
        mask = b["attention_mask"]
        step = train_flops(cfg, mask.shape[0], mask.shape[1], int((b["labels"] >= 0).sum())) / (MFU * H100)
        steps.append(step)
        begin = max(ready, gpu_free)
        gpu_free = begin + step
        while time.perf_counter() - off_clock < begin:  # the host is at most one step ahead of the GPU
            time.sleep(0.0002)
    total = gpu_free - t_start
    del it, loader
    step = float(np.mean(steps))
    return {"wait_frac": idle / total, "step_ms": 1000 * step, "cores_per_gpu": cpu_per_batch / step}


def run(
    data: Path,
    out: Path,
    steps: int = 20,
    big_steps: int = 6,
    feed_batches: int = 300,
    quick: bool = False,
    learn_steps: int = 1500,
    scvi: bool | None = None,
) -> list[Result]:
    """All figures; ``quick`` leaves out the geneformer-10m CPU runs (seconds per step here);
    ``learn_steps=0`` the learning evidence."""
    results: list[Result] = []
    if learn_steps > 0:
        with tempfile.TemporaryDirectory(prefix="cellshard-bench-") as tmp:
            ev = _learn(data, Path(tmp) / "run", learn_steps, scvi=scvi)
        if ev is not None:
            cfg = {k: ev[k] for k in ("label", "pooling", "cells", "donors", "held_out_donors", "held_out_cells")}
            cfg |= {"model": "demo", "steps": learn_steps, "wall_s": round(ev["wall_s"], 1)}
            for emb in (*EVIDENCE, *(("scvi",) if "scvi" in ev else ())):
                for metric in ("linear", "knn", "mixing"):
                    name = f"learn demo {learn_steps} steps: {emb}"
                    results.append(Result("learn", name, metric, ev[emb][metric], "share", cfg))
    runs = [
        ("tiny", 1, "auto", steps, []),
        ("tiny", 2, "ddp", steps, []),
        ("tiny", 2, "deepspeed_stage_2", steps, []),
        ("geneformer-10m", 1, "auto", big_steps, ["--data.batch_size", "2", "--data.num_workers", "1"]),
        ("geneformer-10m", 2, "ddp", big_steps, ["--data.batch_size", "2", "--data.num_workers", "1"]),
    ]
    if quick:
        runs = [r for r in runs if r[0] == "tiny"]
    for config, procs, strategy, n, extra in runs:
        with tempfile.TemporaryDirectory(prefix="cellshard-bench-") as tmp:  # checkpoints are not results
            r = _fit(data, Path(tmp) / "run", config, procs, strategy, n, extra)
        cfg = {"model": config, "processes": procs, "strategy": strategy, "steps": n, "device": "cpu"}
        name = f"train {config}, {procs} proc, {strategy}"
        results.append(Result("train", name, "cells_per_sec", r["cells_per_sec"], "cells/s", cfg))
        results.append(Result("train", name, "step_time_ms", r["step_ms"], "ms", cfg))
    from . import padding  # the pads' share of tokens and FLOPs of the same models (no training)

    results += padding.run(str(data))
    for model in MODELS:
        for workers, collate_on in ((0, "host"), (1, "host"), (2, "host"), (0, "device"), (2, "device")):
            r = _feed(data, model, workers, feed_batches, collate_on)
            cfg = {
                "model": model,
                "workers": workers,
                "collate_on": collate_on,
                "gpu": "H100 SXM (simulated)",
                "mfu": MFU,
                "batch_size": MODELS[model][1],
                "context_length": MODELS[model][2],
            }
            name = f"feed H100 {model}, {workers} workers" + (", device collate" if collate_on == "device" else "")
            results.append(Result("feed", name, "data_wait_frac", r["wait_frac"], "share", cfg))
            results.append(Result("feed", name, "simulated_step_ms", r["step_ms"], "ms", cfg))
            results.append(Result("feed", name, "loader_cores_per_gpu", r["cores_per_gpu"], "cores", cfg))
    return results


def ratios(results: list[Result]) -> list[tuple[str, float, str]]:
    from . import padding

    get = {(r.name, r.metric): r.value for r in results}
    out: list[tuple[str, float, str]] = padding.ratios(results)
    learn = sorted({r.name.split(":")[0] for r in results if r.group == "learn"})
    for run in learn:  # the bar: above both baselines on held-out donors
        bases = (("pca50", "PCA-50 scanpy standard"), ("pca50_all", "PCA-50 all genes"), ("untrained", "untrained"))
        for base, what in bases:
            out.append(
                (
                    f"{run}: linear probe on held-out donors, pretrained / {what}",
                    get[(f"{run}: pretrained", "linear")] / get[(f"{run}: {base}", "linear")],
                    "> 1",
                )
            )
    out += [
        (
            "tiny: 2 DDP processes / 1 process (cells/s)",
            get[("train tiny, 2 proc, ddp", "cells_per_sec")] / get[("train tiny, 1 proc, auto", "cells_per_sec")],
            "report (2 cores)",
        )
    ]
    for model in MODELS:
        out.append(
            (
                f"data wait feeding an H100, {model}, 2 workers",
                get[(f"feed H100 {model}, 2 workers", "data_wait_frac")],
                "< 0.02",
            )
        )
        out.append(
            (
                f"loader CPU cores per H100, {model}, device collate",
                get[(f"feed H100 {model}, 2 workers, device collate", "loader_cores_per_gpu")],
                "<= 0.15",
            )
        )
        out.append(
            (
                f"data wait feeding an H100, {model}, 2 workers, device collate",
                get[(f"feed H100 {model}, 2 workers, device collate", "data_wait_frac")],
                "< 0.02",
            )
        )
    return out
