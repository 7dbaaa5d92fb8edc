"""Real processes over a large shard *index*: a 2-rank x 2-worker ``torchrun`` job per sampling mode.

``scale_modes`` plans atlas-sized jobs in one process; this runs the loader itself, in the processes a
training job has (ranks over gloo, spawned DataLoader workers), over an index of ``--copies`` shards that
all point at one real data shard (a set built by ``ingest build``; the index is resealed, disk stays
small). Each rank builds the dataset and loader the mode asks for, serves a few batches, and reports the
peak RSS (VmHWM) of itself and of each of its workers, and its batch count for the epoch (every rank must
have the same). Run it at two sizes: what grows from the small to the large index is what the plan holds per process
(a spawned worker's baseline, with torch and numba loaded, is ~490 MB here).

    python -m benchmarks.scale_processes --set SMALL_SET --copies 2000 --out DIR
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

__all__ = ["MODES", "make_index", "run"]

MODES: dict[str, dict[str, Any]] = {
    "plain": {},
    "sampled": {"num_samples": None},  # half the index, filled in by run()
    "mix": {"streams": True},
    "replacement": {"replacement": True},
    "weighted": {"weighting": {"column": "cell_type", "smoothing": 100}},
    "curriculum": {"weighting": {"column": "cell_type", "smoothing": 100, "curriculum_epochs": 2}},
    "grouped": {"group_by": "dataset_id", "group_exact": True, "remainder": "pad"},
    "grouped-bounded": {"group_by": "dataset_id", "group_pool_cells": 4096},
}


def make_index(small: Path, out: Path, copies: int) -> int:
    """An index of ``copies`` shards, each the first train shard of ``small``; its cell count."""
    from shards.format.manifest import manifest_checksum

    m = json.loads((small / "index.json").read_text())
    out.mkdir(parents=True, exist_ok=True)
    for f in small.iterdir():
        if f.name != "index.json" and not (out / f.name).exists():
            (out / f.name).symlink_to(f.resolve())
    at = [s["split"] for s in m["shards"]].index("train")
    one = m["shards"][at]
    m["shards"] = [{**copy.deepcopy(one), "first_cell": i * one["n_cells"]} for i in range(copies)]
    m["n_cells"], m["n_tokens"] = copies * one["n_cells"], copies * one["n_tokens"]
    m["splits"] = {"train": {"n_cells": m["n_cells"], "n_shards": copies, "n_tokens": m["n_tokens"]}}
    if m.get("labels"):  # the one shard's label counts, once per copy
        from shards.format.labels import read_label_counts, save_label_counts

        (out / "labels.npz").unlink(missing_ok=True)
        table = {}
        for col in m["labels"]["columns"]:
            c = read_label_counts(small / "labels.npz", col, str(small)).select([at] * copies)
            table[col] = (c.values.tolist(), c.indptr, c.codes, c.counts, c.missing)
        m["labels"] = save_label_counts(out, table)
    m["checksum"] = manifest_checksum(m)
    (out / "index.json").write_text(json.dumps(m, sort_keys=True))
    return int(m["n_cells"])


def _hwm_mb(pid: int | str = "self") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _workers() -> list[int]:
    """This process's spawned DataLoader workers (not multiprocessing's resource tracker)."""
    me, out = os.getpid(), []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                parent = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
                if parent == me and b"spawn_main" in (d / "cmdline").read_bytes():
                    out.append(int(d.name))
            except (OSError, IndexError, ValueError):
                continue
    return out


def _rank(path: str, second: str, mode: str, options: dict[str, Any], out: Path) -> None:
    """One rank of the job (run under torchrun)."""
    import torch.distributed as dist

    from shards import CellDataLoader, ShardedCellDataset

    dist.init_process_group("gloo")
    rank = dist.get_rank()
    t0 = time.perf_counter()
    source: Any = path
    if options.pop("streams", None):
        source = [{"path": path, "weight": 0.7, "name": "a"}, {"path": second, "weight": 0.3, "name": "b"}]
    ds = ShardedCellDataset(source, batch_size=64, context_length=256, **options)
    built = time.perf_counter() - t0
    loader = CellDataLoader(ds, num_workers=2, persistent_workers=True)
    it = iter(loader)
    t0 = time.perf_counter()
    cells = sum(next(it)["input_ids"].shape[0] for _ in range(4))
    first = time.perf_counter() - t0
    workers = {pid: _hwm_mb(pid) for pid in _workers()}
    record = {
        "mode": mode,
        "rank": rank,
        "dataset_seconds": built,
        "first_4_batches_seconds": first,
        "cells_served": cells,
        "batches_per_rank": len(ds),
        "main_hwm_mb": _hwm_mb(),
        "worker_hwm_mb": sorted(workers.values()),
    }
    (out / f"{mode}-rank{rank}.json").write_text(json.dumps(record))
    del it
    dist.barrier()
    dist.destroy_process_group()


def run(small: Path, copies: int, out: Path, modes: list[str]) -> list[dict[str, Any]]:
    out.mkdir(parents=True, exist_ok=True)
    big, second = out / "index", out / "index-b"
    n = make_index(small, big, copies)
    make_index(small, second, max(1, copies // 2))
    rows = []
    for mode in modes:
        options = dict(MODES[mode])
        if "num_samples" in options:
            options["num_samples"] = n // 2
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]
        cmd += ["-m", "benchmarks.scale_processes", "--rank-of", mode, "--set", str(big), "--second", str(second)]
        cmd += ["--options", json.dumps(options), "--out", str(out)]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            rows.append({"mode": mode, "error": (proc.stderr.strip().splitlines() or ["?"])[-1]})
            continue
        ranks = [json.loads((out / f"{mode}-rank{r}.json").read_text()) for r in (0, 1)]
        rows.append({"mode": mode, "cells": n, "wall_seconds": wall, "ranks": ranks})
    (out / "results.json").write_text(json.dumps(rows, indent=1) + "\n")
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| mode | index cells | dataset build (s) | main RSS, rank 0 / 1 (MB) | worker RSS (MB) | batches per rank |",
        "|---|---:|---:|---|---|---|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['mode']} | failed: {r['error']} |||||")
            continue
        a, b = r["ranks"]
        workers = ", ".join(f"{w:,.0f}" for w in a["worker_hwm_mb"] + b["worker_hwm_mb"])
        same = "equal" if a["batches_per_rank"] == b["batches_per_rank"] else "DIFFER"
        lines.append(
            f"| {r['mode']} | {r['cells']:,} | {max(a['dataset_seconds'], b['dataset_seconds']):.1f} | "
            f"{a['main_hwm_mb']:,.0f} / {b['main_hwm_mb']:,.0f} | {workers} | {a['batches_per_rank']:,} ({same}) |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.scale_processes", description=__doc__.splitlines()[0])
    p.add_argument("--set", type=Path, required=True, help="a small Zarr set (its first train shard is repeated)")
    p.add_argument("--copies", type=int, default=2000)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--modes", nargs="*", default=list(MODES), choices=list(MODES))
    p.add_argument("--rank-of", default=None, help=argparse.SUPPRESS)
    p.add_argument("--second", default=None, help=argparse.SUPPRESS)
    p.add_argument("--options", default="{}", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.rank_of:
        _rank(str(a.set), a.second, a.rank_of, json.loads(a.options), a.out)
        return 0
    rows = run(a.set, a.copies, a.out, a.modes)
    text = table(rows)
    (a.out / "TABLE.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
