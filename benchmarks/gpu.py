"""``python -m benchmarks gpu --out DIR``: every GPU code path of cellshard checked in one command.

Rows (each a function below; ``CHECKS`` lists them in order):

- ``device collate``: the loader's ragged batches, pinned and sent ``non_blocking``, padded and masked
  (and packed) on the GPU equal the host collator's batches bit for bit;
- ``pinned copy``: host-to-device bandwidth of a pinned ``non_blocking`` copy against a pageable one;
- ``bf16``: 20 optimizer steps of geneformer-10m and geneformer-106m under bf16 autocast from the
  same initial weights and batches as fp32: every loss finite, the largest relative gap to fp32;
- ``strategies``: ``python -m training fit`` for a few steps with FSDP and with DeepSpeed ZeRO-2 on one
  GPU (as a user runs it): exit status and last loss;
- ``clock``: the CUDA-events step clock (``ThroughputMonitor``) against the wall clock;
- ``mfu``: model FLOP utilisation at the largest batch that fits (doubling until out of memory),
  padded, packed (SDPA, block-diagonal mask) and packed with ``attention: flex``, bf16;
- ``flex attention``: packed training with ``flex_attention`` against SDPA: loss gap and step time;
- ``data wait``: ``fit`` with 0, 2 and 4 DataLoader workers: the share of step time spent waiting for data;
- ``packed = padded``: a packed cell's hidden states against its padded ones, on real batches;
- ``compile``: the compiled trunk against eager, padded and packed: step sums, graph breaks, step time.

On a machine without CUDA the rows that need it are listed as skipped, with the reason, and the rest
run (a test runs it so on CPU: ``tests/test_gpu_check.py``). ``--quick`` shrinks the CPU rows (tiny
model, fewer steps). Writes ``results.json`` and ``REPORT.md`` in ``--out``.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import torch

from .report import Result

__all__ = ["CHECKS", "Skip", "notes", "report_config", "run"]

ROOT = Path(__file__).resolve().parents[1]


class Skip(Exception):
    """A row that cannot run here; its message is the reason."""


@dataclasses.dataclass
class Context:
    data: Path
    device: torch.device
    quick: bool

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    def need_cuda(self) -> None:
        if not self.cuda:
            raise Skip("no CUDA device")


def _models(ctx: Context) -> dict[str, tuple[dict, int, int]]:
    """Architecture, batch size and context of the models a row runs (on CPU with --quick: a tiny one)."""
    from .train import MODELS

    if ctx.quick and not ctx.cuda:
        return {"tiny": ({"d_model": 64, "n_layers": 2, "n_heads": 4, "cell_head": True}, 8, 2048)}
    return MODELS


def _dataset(ctx: Context, batch: int, context: int, **options):
    from shards import ShardedCellDataset

    return ShardedCellDataset(str(ctx.data), batch_size=batch, context_length=context, rank=0, world_size=1, **options)


def _to(batch: dict, device: torch.device, non_blocking: bool = False) -> dict:
    out = {}
    for k, v in batch.items():
        if isinstance(v, torch.Tensor):
            v = v.pin_memory() if non_blocking and device.type == "cuda" else v
            v = v.to(device, non_blocking=non_blocking)
        out[k] = v
    return out


def _module(ctx: Context, arch: dict, context: int, vocab: int, seed: int = 0):
    from training.fit.module import CellshardModule

    torch.manual_seed(seed)
    weight = 1.0 if arch.get("cell_head") else 0.0  # the cell head follows the objective's weight
    arch = {k: v for k, v in arch.items() if k != "cell_head"}
    return CellshardModule(vocab_size=vocab, max_positions=context, cell_loss_weight=weight, **arch).to(ctx.device)


def _loss(module, batch: dict) -> torch.Tensor:
    num, cell, sums = module._sums(batch)
    loss = num / sums.token_weight.clamp_min(1.0)
    if module.hparams.cell_loss_weight > 0:
        loss = loss + cell / sums.cell_weight.clamp_min(1.0)
    return loss


def _train(module, batches: list[dict], bf16: bool, warmup: int) -> tuple[list[torch.Tensor], float]:
    """AdamW steps over ``batches`` (on the GPU): each step's loss (device tensors: no sync per step) and
    the seconds per step after ``warmup`` steps (CUDA synchronised at both ends)."""
    opt = torch.optim.AdamW(module.parameters(), lr=1e-4)
    losses, t0 = [], time.perf_counter()
    for i, b in enumerate(batches):
        if i == warmup:
            torch.cuda.synchronize()
            t0 = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
            loss = _loss(module, b)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.detach().float())
    torch.cuda.synchronize()
    return losses, (time.perf_counter() - t0) / max(1, len(batches) - warmup)


# -- rows ------------------------------------------------------------------------------------------------
def device_collate(ctx: Context) -> list[Result]:
    ctx.need_cuda()
    out = []
    for pack in (False, True):
        host = _dataset(ctx, 32, 2048, pack=pack, value_bins=11)
        ragged = _dataset(ctx, 32, 2048, pack=pack, value_bins=11, collate_on="device")
        collate = ragged.device_collator()
        bad = n = 0
        for a, b in zip(host, ragged, strict=False):
            on_gpu = collate(_to(b, ctx.device, non_blocking=True))
            want = _to(a, ctx.device)
            bad += any(not torch.equal(want[k], on_gpu[k]) for k in want if isinstance(want[k], torch.Tensor))
            n += 1
            if n >= 20:
                break
        name = f"device collate on CUDA, {'packed' if pack else 'padded'}, value bins"
        out.append(Result("gpu", name, "batches_differing", float(bad), "batches", {"batches": n}))
    return out


def pinned_copy(ctx: Context) -> list[Result]:
    ctx.need_cuda()
    host = torch.randint(0, 255, (64 << 20,), dtype=torch.uint8)
    out = []
    for name, src in (("pageable", host), ("pinned, non_blocking", host.pin_memory())):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        dst = src.to(ctx.device, non_blocking=True)  # warm-up
        torch.cuda.synchronize()
        start.record()
        for _ in range(10):
            dst = src.to(ctx.device, non_blocking=True)
        end.record()
        torch.cuda.synchronize()
        gbps = 10 * src.numel() / (start.elapsed_time(end) / 1000) / 1e9
        assert torch.equal(dst.cpu(), host)
        out.append(Result("gpu", f"host to device copy, {name}", "gb_per_sec", gbps, "GB/s", {"bytes": src.numel()}))
    return out


def bf16(ctx: Context) -> list[Result]:
    ctx.need_cuda()
    if not torch.cuda.is_bf16_supported():
        raise Skip("this GPU has no bf16")
    out = []
    for model, (arch, batch, context) in _models(ctx).items():
        ds = _dataset(ctx, batch, context)
        batches = [_to(b, ctx.device) for _, b in zip(range(20), ds, strict=False)]
        vocab = ds.reader.vocab().size
        losses = {p: _train(_module(ctx, arch, context, vocab), batches, p == "bf16", 0)[0] for p in ("fp32", "bf16")}
        a, b = torch.stack(losses["fp32"]).float(), torch.stack(losses["bf16"]).float()
        cfg = {"model": model, "steps": len(batches), "batch_size": batch, "context_length": context}
        name = f"bf16 autocast {model}, {len(batches)} steps"
        out.append(Result("gpu", name, "all_finite", float(torch.isfinite(b).all()), "bool", cfg))
        out.append(Result("gpu", name, "max_rel_gap_to_fp32", float(((b - a).abs() / a.abs()).max()), "share", cfg))
    return out


def _fit(ctx: Context, root: Path, *args: str) -> tuple[int, pd.DataFrame | None, str]:
    cmd = [sys.executable, "-m", "training", "fit", "--config", "tiny", "--data.path", str(ctx.data)]
    cmd += ["--trainer.default_root_dir", str(root), "--trainer.enable_progress_bar", "false", *args]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=600)
    history = root / "history.csv"
    return done.returncode, pd.read_csv(history) if history.exists() else None, done.stderr[-2000:]


def strategies(ctx: Context) -> list[Result]:
    ctx.need_cuda()
    out = []
    for strategy in ("fsdp", "deepspeed_stage_2"):
        with tempfile.TemporaryDirectory() as tmp:
            args = ["--trainer.max_steps", "10", "--trainer.accelerator", "gpu", "--trainer.devices", "1"]
            args += ["--trainer.strategy", strategy, "--trainer.precision", "bf16-mixed"]
            rc, history, err = _fit(ctx, Path(tmp), *args)
        loss = float(history["train/loss"].dropna().iloc[-1]) if history is not None else float("nan")
        cfg = {"strategy": strategy, "steps": 10, "stderr_tail": err[-300:] if rc else ""}
        out.append(Result("gpu", f"fit tiny, {strategy}, 1 GPU", "exit_status", float(rc), "code", cfg))
        out.append(Result("gpu", f"fit tiny, {strategy}, 1 GPU", "last_train_loss", loss, "nats", cfg))
    return out


def clock(ctx: Context) -> list[Result]:
    ctx.need_cuda()
    from training.fit.callbacks import _CudaClock

    x = torch.randn(4096, 4096, device=ctx.device)
    c = _CudaClock()
    torch.cuda.synchronize()
    wall0, a = time.perf_counter(), c.mark()
    for _ in range(50):
        x = (x @ x).tanh()
    b = c.mark()
    c.settle(b)
    wall = time.perf_counter() - wall0
    events = c.seconds(a, b)
    return [Result("gpu", "CUDA-events clock", "events_over_wall", events / wall, "ratio", {"matmuls": 50})]


def mfu(ctx: Context) -> list[Result]:
    ctx.need_cuda()
    from training.model.flops import peak_flops, train_flops

    peak = peak_flops(torch.cuda.get_device_name(ctx.device), "bf16-mixed")
    if peak is None:
        raise Skip(f"{torch.cuda.get_device_name(ctx.device)} is not in training.model.flops.PEAK_TFLOPS")
    out = []
    for model, (arch, batch, context) in _models(ctx).items():
        for layout in ("padded", "packed", "packed, flex"):
            pack = layout != "padded"
            arch_here = {**arch, "attention": "flex"} if layout == "packed, flex" else arch
            best = None
            size = batch
            while size <= 512:
                try:
                    best = (size, _mfu_at(ctx, arch_here, size, context, pack, peak, train_flops))
                except torch.OutOfMemoryError:
                    torch.cuda.empty_cache()
                    break
                size *= 2
            if best is None:
                continue
            size, (value, step_s) = best
            cfg = {"model": model, "batch_size": size, "context_length": context, "layout": layout, "precision": "bf16"}
            name = f"MFU {model}, {layout}, largest batch"
            out.append(Result("gpu", name, "mfu", value, "share", cfg))
            out.append(Result("gpu", name, "step_ms", 1000 * step_s, "ms", cfg))
    return out


def _mfu_at(ctx: Context, arch, size, context, pack, peak, train_flops) -> tuple[float, float]:
    ds = _dataset(ctx, size, context, pack=pack)
    batches = [_to(b, ctx.device) for _, b in zip(range(8), ds, strict=False)]
    m = _module(ctx, arch, context, ds.reader.vocab().size)
    flops = 0.0  # counted before the clock runs: reading the masked count is a sync
    for b in batches[3:]:
        rows, width = b["attention_mask"].shape
        masked = int((b["labels"] >= 0).sum())
        flops += train_flops(m.cfg, rows, width, masked, cells=len(b["loss_weight"]))
    _, step_s = _train(m, batches, True, 3)
    return flops / (step_s * len(batches[3:])) / peak, step_s


def flex(ctx: Context) -> list[Result]:
    """Packed training with ``attention: flex`` against ``sdpa`` from the same weights and batches."""
    ctx.need_cuda()
    out = []
    for model, (arch, batch, context) in _models(ctx).items():
        ds = _dataset(ctx, batch, context, pack=True)
        batches = [_to(b, ctx.device) for _, b in zip(range(12), ds, strict=False)]
        losses, times = {}, {}
        for attention in ("sdpa", "flex"):
            m = _module(ctx, {**arch, "attention": attention}, context, ds.reader.vocab().size)
            losses[attention], times[attention] = _train(m, batches, True, 2)
        a, b = torch.stack(losses["sdpa"]), torch.stack(losses["flex"])
        cfg = {"model": model, "batch_size": batch, "context_length": context, "steps": len(batches)}
        name = f"flex vs sdpa, packed, {model}"
        out.append(Result("gpu", name, "max_rel_loss_gap", float(((a - b).abs() / a.abs()).max()), "share", cfg))
        out.append(Result("gpu", name, "sdpa_over_flex_step_time", times["sdpa"] / times["flex"], "ratio", cfg))
    return out


def data_wait(ctx: Context) -> list[Result]:
    steps = "15" if ctx.quick else "200"
    out = []
    for workers in (0, 2, 4):
        with tempfile.TemporaryDirectory() as tmp:
            args = [
                "--trainer.max_steps",
                steps,
                "--data.num_workers",
                str(workers),
                "--trainer.log_every_n_steps",
                "5",
                "--data.val_split",  # the steps' data wait only: no validation, probe or baseline
                "null",
            ]
            if ctx.cuda:
                args += ["--trainer.accelerator", "gpu", "--trainer.devices", "1"]
            rc, history, err = _fit(ctx, Path(tmp), *args)
        if rc != 0 or history is None:
            raise RuntimeError(f"fit with {workers} workers failed: {err}")
        wait = history["perf/data_wait_frac"].dropna()
        cfg = {"config": "tiny", "steps": int(steps), "workers": workers, "device": ctx.device.type}
        name = f"data wait, tiny, {workers} workers"
        out.append(
            Result(
                "gpu",
                name,
                "data_wait_frac",
                float(wait.iloc[1:].mean() if len(wait) > 1 else wait.mean()),
                "share",
                cfg,
            )
        )
    return out


def packed_equals_padded(ctx: Context) -> list[Result]:
    from shards.loading.packing import pack_batch, plan_packing

    out = []
    for model, (arch, batch, context) in _models(ctx).items():
        ds = _dataset(ctx, batch, context)
        m = _module(ctx, arch, context, ds.reader.vocab().size).eval()
        worst, computed, padded = 0.0, 0, 0
        for _, b in zip(range(3), ds, strict=False):
            b = _to(b, ctx.device)
            sizes = b["attention_mask"].sum(1)
            plan = plan_packing(sizes.cpu().numpy(), context)
            t = {k: torch.from_numpy(getattr(plan, k)).to(ctx.device) for k in ("row", "start")}
            p = pack_batch(b, t["row"], t["start"], sizes, plan.rows, plan.width, 0)
            with torch.no_grad():
                flat = m.model.encode(b["input_ids"], b["attention_mask"])
                dense = m.model.encode(p["input_ids"], p["attention_mask"], None, p["segments"], p["positions"])
            for i in range(len(sizes)):
                diff = (dense[p["segments"] == i] - flat[i][b["attention_mask"][i]]).abs().max()
                worst = max(worst, float(diff))
            computed += p["input_ids"].numel()
            padded += b["input_ids"].numel()
        cfg = {"model": model, "batch_size": batch, "context_length": context, "device": ctx.device.type}
        name = f"packed = padded, {model}"
        out.append(Result("gpu", name, "max_abs_hidden_diff", worst, "abs", cfg))
        out.append(Result("gpu", name, "computed_tokens_packed_over_padded", computed / padded, "ratio", cfg))
    return out


def compiled(ctx: Context) -> list[Result]:
    from torch._dynamo.utils import counters

    out = []
    for model, (arch, batch, context) in _models(ctx).items():
        for pack in (False, True):
            ds = _dataset(ctx, batch, context, pack=pack)
            batches = [_to(b, ctx.device) for _, b in zip(range(6), ds, strict=False)]
            m = _module(ctx, arch, context, ds.reader.vocab().size)
            times, sums = {}, {}
            for mode in ("eager", "compiled"):
                if mode == "compiled":
                    torch._dynamo.reset()
                    counters.clear()
                    m.model.compile_trunk(dynamic=True)
                sums[mode] = [m._sums(b)[2].values.detach() for b in batches[:2]]
                for b in batches[:2]:  # warm-up: compiles forward and backward
                    _loss(m, b).backward()
                    m.zero_grad(set_to_none=True)
                t0 = time.perf_counter()
                for b in batches[2:]:
                    loss = _loss(m, b)
                    loss.backward()
                    m.zero_grad(set_to_none=True)
                if ctx.cuda:
                    torch.cuda.synchronize()
                times[mode] = (time.perf_counter() - t0) / len(batches[2:])
            breaks = sum(counters["graph_break"].values())
            graphs = counters["stats"]["unique_graphs"]
            gap = max(
                float(((a - b).abs() / a.abs().clamp_min(1e-6)).max())
                for a, b in zip(sums["eager"], sums["compiled"], strict=True)
            )
            cfg = {
                "model": model,
                "pack": pack,
                "device": ctx.device.type,
                "batch_size": batch,
                "context_length": context,
            }
            name = f"compile {model}, {'packed' if pack else 'padded'}"
            out.append(Result("gpu", name, "graph_breaks", float(breaks), "count", cfg))
            out.append(Result("gpu", name, "graphs_compiled", float(graphs), "count", cfg))
            out.append(Result("gpu", name, "max_rel_gap_to_eager", gap, "share", cfg))
            out.append(
                Result("gpu", name, "eager_over_compiled_step_time", times["eager"] / times["compiled"], "ratio", cfg)
            )
    return out


CHECKS: tuple[tuple[str, Callable[[Context], list[Result]]], ...] = (
    ("device collate", device_collate),
    ("pinned copy", pinned_copy),
    ("bf16", bf16),
    ("strategies", strategies),
    ("clock", clock),
    ("mfu", mfu),
    ("flex attention", flex),
    ("data wait", data_wait),
    ("packed = padded", packed_equals_padded),
    ("compile", compiled),
)


def _small_set(root: Path) -> Path:
    """A small shard set to check with when none is given (synthetic atlas-profile cells)."""
    for args in (
        ["synth", "--cells", "3000", "--genes", "2000", "--datasets", "3", "--seed", "5", "--profile", "atlas"],
        ["build", "--input", str(root / "c*.h5ad"), "--format", "zarr", "--val-fraction", "0.1", "--split-by", "cell"],
    ):
        extra = ["--out", str(root / "c.h5ad")] if args[0] == "synth" else ["--out", str(root / "set"), "--quiet"]
        done = subprocess.run([sys.executable, "-m", "ingest", *args, *extra], capture_output=True, text=True, cwd=ROOT)
        if done.returncode != 0:
            raise SystemExit(f"gpu check: making a small shard set failed: {done.stderr.strip()[-500:]}")
    return root / "set"


def run(
    out: Path, data: Path | None, quick: bool = False, only: list[str] | None = None
) -> tuple[list[Result], list[dict]]:
    """Every row of ``CHECKS`` (``only``: these): the results, and the rows skipped with their reasons."""
    unknown = sorted(set(only or ()) - {name for name, _ in CHECKS})
    if unknown:
        raise SystemExit(f"gpu check: no row {', '.join(unknown)}; the rows: {', '.join(n for n, _ in CHECKS)}")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    with tempfile.TemporaryDirectory() as tmp:
        ctx = Context(data or _small_set(Path(tmp)), device, quick)
        results, skipped = [], []
        for name, check in CHECKS:
            if only and name not in only:
                continue
            t0 = time.perf_counter()
            try:
                rows = check(ctx)
            except Skip as why:
                skipped.append({"row": name, "reason": str(why)})
                print(f"gpu check: {name}: skipped ({why})", file=sys.stderr)
                continue
            print(f"gpu check: {name}: {len(rows)} figures in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
            results += rows
    return results, skipped


def notes(skipped: list[dict]) -> list[str]:
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "no CUDA device (CPU)"
    return [f"device: {device}", *(f"skipped: {s['row']} ({s['reason']})" for s in skipped)]


def report_config(skipped: list[dict], quick: bool) -> dict:
    return {"device": notes([])[0].removeprefix("device: "), "quick": quick, "skipped": skipped}
