"""Peak memory of a process tree, measured in a way that survives ``fork`` + ``exec``.

``getrusage().ru_maxrss`` is inherited across ``exec`` on Linux: a process started with the ``spawn``
method (fork, then exec) reports at least its parent's peak at fork time, and ``RUSAGE_CHILDREN`` does
the same for its own children. The figures here come from ``VmHWM`` (``/proc/self/status``, reset by
``exec``) for this process and from sampling the children's RSS with psutil every 0.1 s.
"""

from __future__ import annotations

import threading
from pathlib import Path

import psutil

__all__ = ["PeakRSS", "vm_hwm_mib"]


def vm_hwm_mib() -> float:
    """This process's peak resident set size since its ``exec``, in MiB (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024  # kB
    raise RuntimeError("no VmHWM in /proc/self/status (Linux only)")


class PeakRSS:
    """Context manager: ``process_mib`` (largest single process) and ``total_mib`` (largest sampled sum)."""

    def __init__(self, interval: float = 0.1) -> None:
        self.interval = interval
        self.children_mib = 0.0
        self.total_mib = 0.0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        me = psutil.Process()
        while not self._done.wait(self.interval):
            total = me.memory_info().rss
            for child in me.children(recursive=True):
                try:
                    rss = child.memory_info().rss
                except psutil.Error:  # exited between listing and reading
                    continue
                total += rss
                self.children_mib = max(self.children_mib, rss / 1024**2)
            self.total_mib = max(self.total_mib, total / 1024**2)

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._done.set()
        self._thread.join()
        self.own_mib = vm_hwm_mib()
        self.process_mib = max(self.own_mib, self.children_mib)
        self.total_mib = max(self.total_mib, self.own_mib)
