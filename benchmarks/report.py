"""``results.json`` (DESIGN.md schema) and ``REPORT.md``; every ratio from figures of the same run."""

from __future__ import annotations

import json
import os
import platform
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path

__all__ = ["Result", "write_report"]


@dataclass
class Result:
    group: str
    name: str
    metric: str
    value: float
    unit: str
    config: dict = field(default_factory=dict)


def _machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        mem = int(Path("/proc/meminfo").read_text().split()[1]) // 1024**2
    except OSError:
        mem = None
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gib": mem, "gpu": None}


def write_report(
    out: Path, results: list[Result], command: str, derived: list[tuple[str, float, str]] | None = None
) -> None:
    out.mkdir(parents=True, exist_ok=True)
    versions = {p: version(p) for p in ("cellshard", "numpy", "scipy", "anndata", "zarr", "pyarrow", "numba")}
    doc = {
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": _machine(),
        "versions": versions,
        "command": command,
        "results": [asdict(r) for r in results],
    }
    (out / "results.json").write_text(json.dumps(doc, indent=1) + "\n")
    by_name = {(r.name, r.metric): r.value for r in results}
    base = by_name.get(("geneformer tokenizer algorithm", "cells_per_sec"))
    lines = [
        f"# cellshard benchmark report ({doc['created_at'][:10]})",
        "",
        f"Command: `{command}`",
        "",
        f"Machine: {doc['machine']['cpu']}, {doc['machine']['cores']} cores, "
        f"{doc['machine']['memory_gib']} GiB, no GPU",
        "",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()),
        "",
        "| benchmark | metric | value | vs Geneformer algorithm |",
        "|---|---|---:|---:|",
    ]
    for r in results:
        ratio = f"{r.value / base:.1f}x" if base and r.metric == "cells_per_sec" else ""
        lines.append(f"| {r.name} | {r.metric} | {r.value:,.0f} {r.unit} | {ratio} |")
    if derived:
        lines += ["", "| ratio (same run) | value | target |", "|---|---:|---|"]
        lines += [f"| {what} | {value:.2f} | {target} |" for what, value, target in derived]
        doc["derived"] = [{"what": w, "value": v, "target": t} for w, v, t in derived]
        (out / "results.json").write_text(json.dumps(doc, indent=1) + "\n")
    (out / "REPORT.md").write_text("\n".join(lines) + "\n")
