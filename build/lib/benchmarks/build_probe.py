"""One ``ingest build`` in a fresh process: its wall time (imports excluded) and peak memory.

``python -m benchmarks.build_probe '{"out": ..., "input": [...], ...}'`` prints one JSON line. A fresh
process per build gives each one its own peak RSS, read from ``VmHWM`` in ``/proc/self/status``:
``getrusage``'s ``ru_maxrss`` survives ``exec`` on Linux and would report the forking parent's peak.
With ``--workers W > 1`` the spawned workers' RSS is sampled every 0.1 s (psutil) and the figure is the
largest of any one process.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

__all__ = ["probe_build"]


def probe_build(options: dict) -> dict:
    """Run the build in a child process; ``{seconds, n_cells, n_tokens, bytes, peak_rss_mib}``."""
    res = subprocess.run(
        [sys.executable, "-m", "benchmarks.build_probe", json.dumps(options)], capture_output=True, text=True
    )
    if res.returncode != 0:
        raise RuntimeError(f"build failed: {res.stderr[-2000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def _main(argv: list[str]) -> int:
    from ingest import BuildOptions, build

    from .memory import PeakRSS

    opts = json.loads(argv[0])
    with PeakRSS() as peak:
        t0 = time.perf_counter()
        manifest = build(BuildOptions(**opts))
        seconds = time.perf_counter() - t0
    out = Path(opts["out"])
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    doc = {
        "seconds": seconds,
        "n_cells": manifest["n_cells"],
        "n_tokens": manifest["n_tokens"],
        "bytes": size,
        "peak_rss_mib": peak.process_mib,
    }
    print(json.dumps(doc))
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
