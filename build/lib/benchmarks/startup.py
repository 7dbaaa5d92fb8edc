"""Start-up: how long a user waits for ``import shards``/``ingest``/``training`` and each ``--help``.

Each probe is a fresh interpreter (``python -c`` or ``python -m ... --help``), timed wall-clock from
spawn to exit, ``rounds`` times with the probes interleaved (round 1 of every probe, then round 2, ...),
so a busy moment of the machine spreads over all of them; the median counts. The targets (issue 31):
``import shards`` under 1 s and every ``--help`` under 2 s; ``fit``/``validate`` build LightningCLI's
parser from Lightning's classes, so their help imports Lightning (measured, not targeted).
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

from .report import Result

__all__ = ["PROBES", "TARGETS", "ratios", "run"]

#: (name, argv after the interpreter)
PROBES: tuple[tuple[str, list[str]], ...] = (
    ("import shards", ["-c", "import shards"]),
    ("import ingest", ["-c", "import ingest"]),
    ("import training", ["-c", "import training"]),
    ("ingest --help", ["-m", "ingest", "--help"]),
    ("ingest build --help", ["-m", "ingest", "build", "--help"]),
    ("ingest synth --help", ["-m", "ingest", "synth", "--help"]),
    ("python -m shards stream --help", ["-m", "shards", "stream", "--help"]),
    ("python -m training --help", ["-m", "training", "--help"]),
    ("python -m training embed --help", ["-m", "training", "embed", "--help"]),
    ("python -m training report --help", ["-m", "training", "report", "--help"]),
    ("python -m training fit --help", ["-m", "training", "fit", "--help"]),
)
#: seconds: the issue's targets (fit's help is measured, not targeted: see the module docstring)
TARGETS = {"import shards": 1.0, **{name: 2.0 for name, _ in PROBES if "--help" in name and " fit " not in name}}


def _once(argv: list[str], cwd: Path) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, *argv], cwd=cwd, capture_output=True, text=True)
    dt = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{argv}: exit {proc.returncode}: {proc.stderr[-500:]}")
    return dt


def run(out: Path, rounds: int = 5) -> list[Result]:
    out.mkdir(parents=True, exist_ok=True)
    times: dict[str, list[float]] = {name: [] for name, _ in PROBES}
    for _ in range(rounds):
        for name, argv in PROBES:
            times[name].append(_once(argv, out))
    results = []
    for name, values in times.items():
        config = {"rounds": rounds, "all_s": [round(v, 3) for v in values], "target_s": TARGETS.get(name)}
        results.append(Result("startup", name, "median_s", statistics.median(values), "s", config))
    return results


def ratios(results: list[Result]) -> list[tuple[str, float, str]]:
    return [
        (f"{r.name}: median / target", r.value / TARGETS[r.name], "<= 1")
        for r in results
        if r.group == "startup" and r.name in TARGETS
    ]
