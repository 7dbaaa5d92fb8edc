"""Worker start-up that fails loudly: a spawned DataLoader worker that cannot start makes the loader
raise, naming the cause, instead of hanging.

Two ways a spawned worker dies before it works:

- **The script has no ``if __name__ == "__main__":`` guard.** A spawned child re-runs the main module's
  top-level code, reaches the loader again and fails (``multiprocessing``'s "bootstrapping phase"
  error). ``check_main_guard`` sees this before any worker starts: the loader is being iterated from a
  line of the main module that no such guard encloses.
- **Any death during start-up** (an import error in the main module, an OOM kill). ``multiprocessing``
  writes a worker's start-up data into a pipe whose read end the parent itself still holds; data larger
  than the pipe's buffer (64 KB) would block that write for ever once the child is gone, before torch
  watches its workers. The dataset pickles as a small spec (``ShardedCellDataset.__getstate__``), so the
  write completes and torch's own liveness check reports the dead worker within seconds;
  ``startup_error`` turns its message into one that names the likely causes.
"""

from __future__ import annotations

import ast
import os
import sys
from functools import lru_cache
from pathlib import Path
from types import FrameType

from ..errors import ShardError

__all__ = ["WorkerStartupError", "check_main_guard", "startup_error"]


class WorkerStartupError(ShardError):
    """A DataLoader worker process died while starting; the message names it and the likely cause."""


@lru_cache(maxsize=8)
def _guarded_lines(path: str) -> tuple[tuple[int, int], ...]:
    """Line ranges of ``if __name__ == "__main__":`` blocks at the top level of a source file."""
    try:
        tree = ast.parse(Path(path).read_text(encoding="utf-8"))
    except (OSError, SyntaxError, ValueError):
        return ()
    spans = []
    for node in tree.body:
        if not isinstance(node, ast.If) or not isinstance(node.test, ast.Compare):
            continue
        parts = [node.test.left, *node.test.comparators]
        names = {p.id for p in parts if isinstance(p, ast.Name)}
        consts = {p.value for p in parts if isinstance(p, ast.Constant)}
        if names == {"__name__"} and consts == {"__main__"} and len(node.body):
            spans.append((node.body[0].lineno, node.body[-1].end_lineno or node.body[-1].lineno))
    return tuple(spans)


def _main_frame(frame: FrameType | None) -> FrameType | None:
    """The frame running the main module's top-level code, if it is on the stack."""
    main = sys.modules.get("__main__")
    if main is None:
        return None
    while frame is not None:
        if frame.f_code.co_name == "<module>" and frame.f_globals is vars(main):
            return frame
        frame = frame.f_back
    return None


def check_main_guard(num_workers: int, context: str, frame: FrameType | None = None) -> None:
    """Refuse to start spawned workers from unguarded top-level code of the main script.

    Under ``spawn`` and ``forkserver`` each worker imports the main module again (as ``__mp_main__``):
    code outside an ``if __name__ == "__main__":`` block runs again there, reaches this loader and
    fails. Interactive sessions, notebooks and ``python -c`` have no main file to re-run: not checked.
    """
    if context not in ("spawn", "forkserver"):
        return
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    top = _main_frame(frame if frame is not None else sys._getframe(1))
    if path is None or top is None or not os.path.exists(path):
        return
    line = top.f_lineno
    if any(start <= line <= end for start, end in _guarded_lines(path)):
        return
    raise WorkerStartupError(
        f"{path}, line {line}: a loader with num_workers={num_workers} is iterated at the top level of the "
        f"script; each {context}ed worker runs that code again and dies. Move it under "
        f'`if __name__ == "__main__":` (or use num_workers=0)'
    )


def startup_error(num_workers: int, exc: BaseException) -> WorkerStartupError:
    """The error of a worker that died before it served its first batch (torch's liveness check raised
    ``exc``), with the likely causes."""
    return WorkerStartupError(
        f"a DataLoader worker died while starting, before it served a batch (of num_workers={num_workers}): "
        f"{str(exc).splitlines()[0]}; its own error is printed above. Common causes: the main script re-runs "
        f'the loader at import (put it under `if __name__ == "__main__":`), or an import that fails in a '
        f"fresh process"
    )
