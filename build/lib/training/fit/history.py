"""The training history as a pandas DataFrame: one row per logged step, one column per metric,
read back from the CSV logger (or any logger that writes ``metrics.csv``) or from TensorBoard's event
files, so that ``history.csv`` and ``report`` do not depend on the logger chosen."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import pandas as pd

from shards.storage.atomic import write_bytes_atomic

__all__ = ["load_history", "load_run_history", "load_tensorboard_history", "write_history"]


def load_history(metrics_csv: str | Path) -> pd.DataFrame:
    """Lightning's CSV logger writes a sparse table (a row per log call); merge it to one row per step."""
    table = pd.read_csv(metrics_csv)
    if "step" not in table.columns:
        return table
    return table.groupby("step", as_index=False).last().sort_values("step").reset_index(drop=True)


def load_run_history(log_root: str | Path) -> pd.DataFrame:
    """The history of a run over all its sessions (``version_*`` of the CSV logger, one per resume):
    for a step logged by several sessions, the latest session's row wins."""
    versions = sorted(Path(log_root).glob("version_*/metrics.csv"), key=lambda p: int(p.parent.name.split("_")[1]))
    tables = [load_history(p) for p in versions if p.stat().st_size]
    if not tables:
        return pd.DataFrame()
    table = pd.concat(tables, ignore_index=True)
    if "step" in table.columns:
        table = table.drop_duplicates("step", keep="last").sort_values("step").reset_index(drop=True)
    return table


def load_tensorboard_history(log_root: str | Path) -> pd.DataFrame:
    """The scalars of every TensorBoard event file under ``log_root`` (all sessions, ``version_*``), one
    row per step as ``load_run_history`` gives them; a later session's value wins for a step."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    files = sorted(Path(log_root).rglob("events.out.tfevents.*"), key=lambda p: (p.stat().st_mtime, str(p)))
    values: dict[int, dict[str, float]] = {}
    for path in files:
        acc = EventAccumulator(str(path), size_guidance={"scalars": 0})
        acc.Reload()
        for tag in acc.Tags().get("scalars", []):
            if tag in ("epoch", "hp_metric"):
                continue
            for event in acc.Scalars(tag):
                values.setdefault(int(event.step), {})[tag] = float(event.value)
    if not values:
        return pd.DataFrame()
    table = pd.DataFrame.from_dict(values, orient="index").sort_index()
    table.index.name = "step"
    return table.reset_index()


def write_history(trainer: pl.Trainer) -> Path | None:
    """Write ``<default_root_dir>/history.csv`` from the CSV logger's metrics, else from TensorBoard's
    event files (None with neither)."""
    table = pd.DataFrame()
    for logger in trainer.loggers:
        if isinstance(logger, pl.loggers.CSVLogger):
            logger.save()
            table = load_run_history(Path(logger.log_dir).parent)
            break
        if isinstance(logger, pl.loggers.TensorBoardLogger):
            logger.save()
            table = load_tensorboard_history(Path(logger.log_dir).parent)
    if len(table):
        out = Path(trainer.default_root_dir) / "history.csv"
        write_bytes_atomic(out, table.to_csv(index=False).encode())
        return out
    return None
