"""``results.json`` (schema: ``results.schema.json``) and ``REPORT.md``; every ratio from figures of the same run."""

from __future__ import annotations

import json
import os
import platform
import re
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

__all__ = ["Result", "render_markdown", "validate_results", "verdict", "write_report"]

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


_TITLES = {
    "ingest": "Ingest (h5ad and SOMA -> shards, next to Geneformer's tokenizer algorithm)",
    "compare": "Loaders on the same cells (masked, padded batches; whole epochs from iterator creation)",
    "shuffle": "Shuffle quality (first worker count of each loader)",
    "limits": "Limits of the loader",
    "scaling": "Scaling: worker counts and context length (cellshard)",
    "memory": "Scaling: shard set x1 and x10 (repeated shards)",
    "scale": "Sampler at atlas scale (simulation, no data)",
    "train": "Training on this CPU (python -m training fit)",
    "feed": "The loader feeding a simulated H100 (40% MFU)",
    "suite": "Suite",
}


def verdict(value: float, target: str) -> bool | None:
    """Whether ``value`` meets a target written as ``">= 20"``, ``"< 1"``, ``"0"`` or ``"~1 (flat)"``.

    ``~1`` allows 10% either way (run-to-run noise on a shared machine); other targets have no verdict."""
    t = target.strip()
    m = re.match(r"^(>=|<=|<|>)\s*([0-9.]+)", t)
    if m:
        op, bound = m.group(1), float(m.group(2))
        return {">=": value >= bound, "<=": value <= bound, "<": value < bound, ">": value > bound}[op]
    if t == "0":
        return value == 0
    if t.startswith("~1"):
        return abs(value - 1) <= 0.1
    return None


def _compare_table(results: list[dict]) -> list[str]:
    """One row per loader and worker count, with its ratio to cellshard Zarr at the same worker count."""
    rows: dict[str, dict] = {}
    for r in results:
        row = rows.setdefault(r["name"], {"config": r["config"]})
        row[r["metric"]] = r["value"]
    zarr = {v["config"]["workers"]: v.get("cells_per_sec") for k, v in rows.items() if k.startswith("cellshard zarr")}
    lines = [
        "| loader | workers | cells/s | tokens/s | peak RSS (MiB) | cellshard Zarr / this | whole epoch |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for v in rows.values():
        c = v["config"]
        base = zarr.get(c["workers"])
        ratio = f"{base / v['cells_per_sec']:.1f}x" if base and v.get("cells_per_sec") else ""
        whole = "yes" if c.get("whole_epoch") else f"no ({c.get('cells', 0):,} cells)"
        lines.append(
            f"| {c['loader']} | {c['workers']} | {_fmt(v.get('cells_per_sec', float('nan')))} | "
            f"{_fmt(v.get('tokens_per_sec', float('nan')))} | {_fmt(v.get('peak_rss', float('nan')))} | "
            f"{ratio} | {whole} |"
        )
    return lines


def render_markdown(doc: dict) -> str:
    results = doc["results"]
    base = next((r["value"] for r in results if r["name"] == _BASELINE and r["metric"] == "cells_per_sec"), None)
    m = doc["machine"]
    lines = [
        f"# cellshard benchmark report ({doc['created_at'][:10]})",
        "",
        f"Command: `{doc['command']}`",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, {m['gpu'] or 'no GPU'}",
        "",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in doc["versions"].items()),
    ]
    if doc.get("config"):
        lines += ["", "Config: " + ", ".join(f"{k} {v}" for k, v in doc["config"].items())]
    if doc.get("derived"):
        lines += [
            "",
            "## Targets (ratios of figures of this run)",
            "",
            "| ratio (same run) | value | target | met |",
            "|---|---:|---|---|",
        ]
        for d in doc["derived"]:
            met = {True: "yes", False: "**no**", None: ""}[d.get("met")]
            lines.append(f"| {d['what']} | {d['value']:.3g} | {d['target']} | {met} |")
    if doc.get("notes"):
        lines += ["", "## Notes", ""] + [f"- {n}" for n in doc["notes"]]
    groups = list(dict.fromkeys(r["group"] for r in results))
    for g in groups:
        rows = [r for r in results if r["group"] == g]
        lines += ["", f"## {_TITLES.get(g, g.capitalize())}", ""]
        if g == "compare":
            lines += _compare_table(rows)
            continue
        with_base = base is not None and any(r["metric"] == "cells_per_sec" for r in rows) and g == "ingest"
        lines += [
            "| benchmark | metric | value |" + (" vs Geneformer algorithm |" if with_base else ""),
            "|---|---|---:|" + ("---:|" if with_base else ""),
        ]
        for r in rows:
            row = f"| {r['name']} | {r['metric']} | {_fmt(r['value'])} {r['unit']} |"
            if with_base:
                row += f" {r['value'] / base:.1f}x |" if r["metric"] == "cells_per_sec" else " |"
            lines.append(row)
    if doc.get("plots"):
        lines += ["", "## Plots", ""] + [f"![{p}]({p})" for p in doc["plots"]]
    return "\n".join(lines) + "\n"


def write_report(
    out: Path,
    results: list[Result],
    command: str,
    derived: list[tuple[str, float, str]] | None = None,
    notes: list[str] | None = None,
    config: dict | None = None,
) -> None:
    out.mkdir(parents=True, exist_ok=True)
    names = (
        "cellshard",
        "numpy",
        "scipy",
        "anndata",
        "zarr",
        "pyarrow",
        "numba",
        "torch",
        "lightning",
        "deepspeed",
        "webdataset",
        "tiledbsoma",
        "tiledbsoma-ml",
        "arrayloaders",
    )
    versions = {}
    for p in names:
        try:
            versions[p] = version(p)
        except PackageNotFoundError:  # an optional baseline not installed: its rows are absent too
            pass
    doc = {
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": _machine(),
        "versions": versions,
        "command": command,
        "results": [asdict(r) for r in results],
    }
    if config:
        doc["config"] = config
    if derived:
        doc["derived"] = [{"what": w, "value": v, "target": t, "met": verdict(v, t)} for w, v, t in derived]
    if notes:
        doc["notes"] = notes
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
