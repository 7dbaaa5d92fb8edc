"""Worker start-up that fails loudly: a spawned DataLoader worker that cannot start makes the loader
raise within a second, naming the cause, instead of hanging.

Two ways a spawned worker dies before it works, both of which hung the main process for ever:

- **The script has no ``if __name__ == "__main__":`` guard.** A spawned child re-runs the main module's
  top-level code, reaches the loader again and fails (``multiprocessing``'s "bootstrapping phase"
  error). ``check_main_guard`` sees this before any worker starts: the loader is being iterated from a
  line of the main module that no such guard encloses.
- **Any death during start-up** (an import error in the main module, an OOM kill). ``multiprocessing``
  writes a worker's start-up data (the pickled dataset, ~400 KB) into a pipe whose read end the parent
  itself still holds, so once the child is gone the write blocks for ever, before torch's own
  watchdog of dead workers is even set up. ``StartupWatch`` polls the children started meanwhile; when
  one has exited it interrupts the main thread's blocked write with a signal whose handler raises.
"""

from __future__ import annotations

import ast
import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path
from types import FrameType

import psutil

from ..errors import ShardError

__all__ = ["WorkerStartupError", "check_main_guard", "watch_startup"]

#: the signal that interrupts a blocked start (a real-time signal: no scheduler or library sends it)
_SIGNAL = getattr(signal, "SIGRTMIN", None)
_POLL_SECONDS = 0.1


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


class _Pending:
    """The error the next delivery of ``_SIGNAL`` raises in the main thread (None: ignore it)."""

    error: WorkerStartupError | None = None


def _raise_pending(signum: int, frame: FrameType | None) -> None:
    error, _Pending.error = _Pending.error, None
    if error is not None:
        raise error


def _exit_reason(proc: psutil.Process) -> str:
    try:
        return f"pid {proc.pid}, status {proc.status()}"
    except psutil.Error:
        return f"pid {proc.pid}"


@contextlib.contextmanager
def watch_startup(num_workers: int) -> Iterator[None]:
    """Run the block that starts DataLoader workers with a watchdog: a child started within it that
    exits before the block ends makes the block raise ``WorkerStartupError`` (and every child it
    started is killed). Active in the main thread on platforms with real-time signals; a no-op else."""
    if _SIGNAL is None or threading.current_thread() is not threading.main_thread():
        yield
        return
    if signal.getsignal(_SIGNAL) is not _raise_pending:
        signal.signal(_SIGNAL, _raise_pending)
    me = psutil.Process()
    before = {c.pid for c in me.children()}
    stop = threading.Event()
    main_id = threading.main_thread().ident
    dead: list[str] = []

    def watch() -> None:
        while not stop.wait(_POLL_SECONDS):
            for child in me.children():
                if child.pid in before:
                    continue
                try:
                    gone = child.status() == psutil.STATUS_ZOMBIE
                except psutil.NoSuchProcess:
                    gone = True
                if gone and not stop.is_set():
                    dead.append(_exit_reason(child))
                    _Pending.error = _error(num_workers, dead[0])
                    signal.pthread_kill(main_id, _SIGNAL)
                    return

    thread = threading.Thread(target=watch, name="cellshard-worker-startup", daemon=True)
    thread.start()
    ok = False
    try:
        yield
        ok = True
    finally:
        stop.set()
        thread.join()
        if not ok or dead:
            for child in me.children():
                if child.pid not in before:
                    with contextlib.suppress(psutil.Error):
                        child.kill()
                        child.wait(timeout=5)
    _Pending.error = None  # a signal sent as the block ended is ignored
    if dead:
        raise _error(num_workers, dead[0])


def _error(num_workers: int, which: str) -> WorkerStartupError:
    return WorkerStartupError(
        f"a DataLoader worker ({which}) died while starting, before it read its dataset (of "
        f"num_workers={num_workers}); its own error is printed above. Common causes: the main script "
        f're-runs the loader at import (put it under `if __name__ == "__main__":`), or an import that '
        f"fails in a fresh process"
    )
