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
import threading
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


def _vm_hwm_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024  # kB
    raise RuntimeError("no VmHWM in /proc/self/status (Linux only)")


def _main(argv: list[str]) -> int:
    import psutil

    from ingest import BuildOptions, build

    opts = json.loads(argv[0])
    children_peak = [0]
    done = threading.Event()

    def sample() -> None:
        me = psutil.Process()
        while not done.wait(0.1):
            for child in me.children(recursive=True):
                try:
                    children_peak[0] = max(children_peak[0], child.memory_info().rss)
                except psutil.Error:  # exited between listing and reading
                    pass

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    t0 = time.perf_counter()
    manifest = build(BuildOptions(**opts))
    seconds = time.perf_counter() - t0
    done.set()
    sampler.join()
    out = Path(opts["out"])
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    doc = {
        "seconds": seconds,
        "n_cells": manifest["n_cells"],
        "n_tokens": manifest["n_tokens"],
        "bytes": size,
        "peak_rss_mib": max(_vm_hwm_mib(), children_peak[0] / 1024**2),
    }
    print(json.dumps(doc))
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
