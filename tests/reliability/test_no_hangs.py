"""Nothing waits forever: scripts that use the loader with worker processes end, or fail within seconds
with the cause, however they are written. Real processes, real spawned workers."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import pytest

from tests.conftest import ROOT


def _run_script(tmp_path, body: str, timeout: float = 120) -> tuple[subprocess.CompletedProcess, float]:
    script = tmp_path / "user_script.py"
    script.write_text(textwrap.dedent(body))
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=tmp_path,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )
    return proc, time.perf_counter() - t0


@pytest.mark.slow
def test_a_script_ending_with_live_persistent_workers_exits(zarr_set, tmp_path):
    """Workers ignore SIGTERM (a scheduler's signal is for the main process to act on), so the
    ``multiprocessing`` exit hook, which terminates and joins them, would wait forever: the loader
    stops its workers at exit first."""
    proc, _ = _run_script(
        tmp_path,
        f"""
        from shards import CellDataLoader, ShardedCellDataset

        if __name__ == "__main__":
            ds = ShardedCellDataset({str(zarr_set)!r}, batch_size=16, context_length=64)
            loader = CellDataLoader(ds, num_workers=2, persistent_workers=True)
            for i, batch in enumerate(loader):
                if i == 3:
                    break  # a live iterator, workers waiting for more work
            print("done", flush=True)
        """,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "done"
