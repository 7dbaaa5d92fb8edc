"""``python -m benchmarks.soak_teardown --data SET --runs 50 --out DIR``: consecutive 2-rank jobs, each
ending as a user's would, to check that every one exits 0.

torch 2.13 + gloo aborted a rank at interpreter exit ("terminate called without an active exception",
torchrun exit 1) in ~5-10% of 2-rank runs, after all work was done, when the process group was left to
the interpreter's teardown. ``training.fit.cli.teardown`` now ends a run in order (the loaders' workers,
then the process group); this soak is the evidence, kept outside ``make test`` for its length
(~20 s a job on 2 cores). Writes ``DIR/soak.json``: each run's exit status, seconds and whether its
output held the abort's message.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

__all__ = ["main"]

ROOT = Path(__file__).resolve().parents[1]
ABORT = "terminate called"


def _job(data: Path, root: Path, steps: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node=2",
        "-m",
        "training",
        "fit",
        "--config",
        str(ROOT / "configs" / "train" / "tiny.yaml"),
        "--data.path",
        str(data),
        "--trainer.default_root_dir",
        str(root),
        "--trainer.max_steps",
        str(steps),
        "--trainer.val_check_interval",
        str(steps),
        "--trainer.limit_val_batches",
        "2",
        "--trainer.strategy",
        "ddp",
        "--trainer.enable_progress_bar",
        "false",
        "--data.num_workers",
        "1",
    ]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.soak_teardown", description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, required=True, help="a shard set with a val split")
    p.add_argument("--runs", type=int, default=50)
    p.add_argument("--steps", type=int, default=6, help="optimizer steps per job")
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args(argv)
    a.out.mkdir(parents=True, exist_ok=True)
    runs = []
    for i in range(a.runs):
        t0 = time.perf_counter()
        proc = subprocess.run(_job(a.data, a.out / f"run{i}", a.steps), cwd=ROOT, capture_output=True, text=True)
        text = proc.stdout + proc.stderr
        runs.append(
            {"run": i, "exit": proc.returncode, "seconds": round(time.perf_counter() - t0, 1), "abort": ABORT in text}
        )
        if proc.returncode != 0:
            (a.out / f"run{i}.log").write_text(text)
        print(json.dumps(runs[-1]), flush=True)
    ok = sum(r["exit"] == 0 for r in runs)
    summary = {"runs": len(runs), "exit_0": ok, "aborts": sum(r["abort"] for r in runs), "each": runs}
    (a.out / "soak.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(f"{ok} of {len(runs)} jobs exited 0; {summary['aborts']} with {ABORT!r}")
    return 0 if ok == len(runs) else 1


if __name__ == "__main__":
    sys.exit(main())
