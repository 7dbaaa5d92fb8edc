"""PNG plots of a results document (matplotlib, no display needed)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

__all__ = ["plot"]


def _bars(rows: list[tuple[str, float]], title: str, xlabel: str, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(rows) + 1.2))
    names = [n for n, _ in rows]
    ax.barh(names, [v for _, v in rows], color="#3b75af")
    ax.invert_yaxis()
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    ax.set_xscale("log")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot(doc: dict, out: Path) -> list[str]:
    """Write the plots this document has data for; return their file names."""
    written = []
    res = doc["results"]
    loaders = [
        (r["name"], r["value"]) for r in res if r["group"] in ("compare", "limits") and r["metric"] == "cells_per_sec"
    ]
    if loaders:
        _bars(loaders, "cells/s on the same cells (batch 64, context 2,048)", "cells/s (log)", out / "loaders.png")
        written.append("loaders.png")
    ingest_rows = [(r["name"], r["value"]) for r in res if r["group"] == "ingest" and r["metric"] == "cells_per_sec"]
    if ingest_rows:
        _bars(ingest_rows, "ingest and tokenization, cells/s", "cells/s (log)", out / "ingest.png")
        written.append("ingest.png")
    rss = [(r["name"], r["value"]) for r in res if r["metric"] == "peak_rss"]
    if rss:
        _bars(rss, "peak RSS", "MiB (log)", out / "memory.png")
        written.append("memory.png")
    return written
