"""The pictures of ``training report``: PNG files beside the run's ``summary.json``.

- ``curves.png``: train and val loss, and the learning rate, over every session of the run (the
  history spans resumes: one curve, a later session's value winning for a step).
- ``throughput.png``: cells/s and the share of step time spent waiting for data.
- ``embeddings.png``: the cells' embeddings in two dimensions coloured by the label column: UMAP when
  ``umap-learn`` is installed, else the first two principal components (the title says which).

Written with matplotlib's Agg backend (no display needed); each function returns the file it wrote
or None with the reason it did not (a missing column).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["plot_curves", "plot_embeddings", "plot_throughput", "write_plots"]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_curves(history: pd.DataFrame, out: Path) -> Path | str:
    losses = [c for c in ("train/loss", "val/loss") if c in history.columns and history[c].notna().any()]
    lrs = [c for c in history.columns if c.startswith("lr-") and history[c].notna().any()]
    if not losses:
        return "no train/loss or val/loss column in the history"
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2 if lrs else 1, figsize=(11 if lrs else 6, 3.6), squeeze=False)
    for col in losses:
        h = history.dropna(subset=[col])
        axes[0, 0].plot(h["step"], h[col], label=col, marker="o" if col == "val/loss" else None, ms=3)
    axes[0, 0].set(xlabel="optimizer step", ylabel="loss", title="loss over all sessions")
    axes[0, 0].legend()
    if lrs:
        h = history.dropna(subset=[lrs[0]])
        axes[0, 1].plot(h["step"], h[lrs[0]])
        axes[0, 1].set(xlabel="optimizer step", ylabel="learning rate", title=lrs[0])
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def plot_throughput(history: pd.DataFrame, out: Path) -> Path | str:
    cols = ("perf/cells_per_sec", "perf/data_wait_frac")
    if not all(c in history.columns and history[c].notna().any() for c in cols):
        return "no throughput columns in the history (ThroughputMonitor off)"
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    for ax, col, label in zip(axes, cols, ("cells/s", "data wait (share of step time)"), strict=True):
        h = history.dropna(subset=[col])
        ax.plot(h["step"], h[col])
        ax.set(xlabel="optimizer step", ylabel=label, title=col)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def _two_dims(x: np.ndarray, seed: int = 0) -> tuple[np.ndarray, str]:
    try:
        import umap  # type: ignore[import-not-found]

        with warnings.catch_warnings():  # a seeded UMAP runs on one thread, which it announces
            warnings.filterwarnings("ignore", message="n_jobs value 1 overridden to 1 by setting random_state")
            return umap.UMAP(random_state=seed, n_jobs=1).fit_transform(x), "UMAP"
    except ImportError:
        centred = x - x.mean(axis=0)
        _, _, vt = np.linalg.svd(centred, full_matrices=False)
        return centred @ vt[:2].T, "PCA (install umap-learn for UMAP)"


def plot_embeddings(x: np.ndarray, labels: np.ndarray | None, out: Path, max_cells: int = 20_000) -> Path | str:
    keep = np.isfinite(x).all(axis=1)
    x = x[keep]
    if len(x) < 3:
        return "fewer than 3 embedded cells"
    labels = None if labels is None else np.asarray(labels)[keep]
    if len(x) > max_cells:  # a seeded subsample: the picture, not the figures, needs every cell
        pick = np.sort(np.random.default_rng(0).choice(len(x), max_cells, replace=False))
        x, labels = x[pick], None if labels is None else labels[pick]
    xy, method = _two_dims(x.astype(np.float32))
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    if labels is None:
        ax.scatter(xy[:, 0], xy[:, 1], s=3)
    else:
        for value in pd.unique(labels):
            m = labels == value
            ax.scatter(xy[m, 0], xy[m, 1], s=3, label=str(value))
        if len(pd.unique(labels)) <= 20:
            ax.legend(markerscale=4, fontsize=7, loc="best")
    ax.set(title=f"{method} of {len(x):,} cell embeddings", xticks=[], yticks=[])
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def write_plots(run: Path, history: pd.DataFrame, cells: Any | None, label: str | None) -> dict[str, str]:
    """Every picture for a run: {file name: path written, or why it was not}."""
    done: dict[str, str] = {}
    done["curves.png"] = str(plot_curves(history, run / "curves.png"))
    done["throughput.png"] = str(plot_throughput(history, run / "throughput.png"))
    if cells is None:
        done["embeddings.png"] = "no embeddings (no val split and no --embeddings)"
    else:
        labels = cells.obs[label].astype(str).to_numpy() if label and label in cells.obs.columns else None
        done["embeddings.png"] = str(
            plot_embeddings(np.asarray(cells.obsm["X_cellshard"]), labels, run / "embeddings.png")
        )
    return done
