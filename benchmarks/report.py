"""``results.json`` (DESIGN.md schema) and ``REPORT.md``; every ratio from figures of the same run."""

from __future__ import annotations

import json
import os
import platform
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from importlib.metadata import version
from pathlib import Path

__all__ = ["Result", "render_markdown", "validate_results", "write_report"]

_BASELINE = "geneformer tokenizer algorithm"


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
    mem = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        mem = int(Path("/proc/meminfo").read_text().split()[1]) // 1024**2
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gib": mem, "gpu": None}


def _fmt(value: float) -> str:
    """Large figures as integers with separators; small ones (shares, milliseconds) with 3 digits."""
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"


def render_markdown(doc: dict) -> str:
    results = doc["results"]
    base = next((r["value"] for r in results if r["name"] == _BASELINE and r["metric"] == "cells_per_sec"), None)
    m = doc["machine"]
    lines = [
        f"# cellshard benchmark report ({doc['created_at'][:10]})",
        "",
        f"Command: `{doc['command']}`",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, no GPU",
        "",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in doc["versions"].items()),
        "",
    ]
    if base:
        lines += ["| benchmark | metric | value | vs Geneformer algorithm |", "|---|---|---:|---:|"]
    else:
        lines += ["| benchmark | metric | value |", "|---|---|---:|"]
    for r in results:
        row = f"| {r['name']} | {r['metric']} | {_fmt(r['value'])} {r['unit']} |"
        if base:
            row += f" {r['value'] / base:.1f}x |" if r["metric"] == "cells_per_sec" else " |"
        lines.append(row)
    if doc.get("derived"):
        lines += ["", "| ratio (same run) | value | target |", "|---|---:|---|"]
        lines += [f"| {d['what']} | {d['value']:.2f} | {d['target']} |" for d in doc["derived"]]
    return "\n".join(lines) + "\n"


def write_report(
    out: Path, results: list[Result], command: str, derived: list[tuple[str, float, str]] | None = None
) -> None:
    out.mkdir(parents=True, exist_ok=True)
    names = ("cellshard", "numpy", "scipy", "anndata", "zarr", "pyarrow", "numba", "torch", "lightning", "deepspeed")
    versions = {p: version(p) for p in names}
    doc = {
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": _machine(),
        "versions": versions,
        "command": command,
        "results": [asdict(r) for r in results],
    }
    if derived:
        doc["derived"] = [{"what": w, "value": v, "target": t} for w, v, t in derived]
    from .plots import plot

    doc["plots"] = plot(doc, out)
    validate_results(doc)
    (out / "results.json").write_text(json.dumps(doc, indent=1) + "\n")
    (out / "REPORT.md").write_text(render_markdown(doc))


def validate_results(doc: dict) -> None:
    """Raise ``jsonschema.ValidationError`` unless ``doc`` follows ``benchmarks/results.schema.json``."""
    import jsonschema

    schema = json.loads((Path(__file__).parent / "results.schema.json").read_text())
    jsonschema.validate(doc, schema)
