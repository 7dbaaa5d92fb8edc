"""Progress bars (rich) with a cells/s rate; silent under ``--quiet``."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

__all__ = ["Reporter"]


class _Rate(ProgressColumn):
    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:,.0f} {task.fields.get('unit', 'cells')}/s" if speed else "")


class Reporter:
    """One place for progress and messages, on stderr so stdout stays clean for ``--json`` output."""

    def __init__(self, quiet: bool = False) -> None:
        self.quiet = quiet
        self.console = Console(stderr=True, quiet=quiet)

    def info(self, message: str) -> None:
        self.console.print(message, highlight=False)

    @contextmanager
    def task(self, description: str, total: int, unit: str = "cells") -> Iterator:
        if self.quiet:
            yield lambda n: None
            return
        columns = (
            TextColumn("{task.description:<10}"),
            BarColumn(),
            MofNCompleteColumn(),
            _Rate(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
        )
        with Progress(*columns, console=self.console, transient=False) as progress:
            tid = progress.add_task(description, total=total, unit=unit)
            yield lambda n: progress.advance(tid, n)
