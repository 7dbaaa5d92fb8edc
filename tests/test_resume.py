"""Crash and resume: a killed build, rerun, ends byte-identical to an uninterrupted one."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time

import pytest

from ingest.errors import IngestError
from ingest.lock import BuildLock
from tests.conftest import ROOT, manifest_without_time, run_cli, small_build

ARGS = ["--cells-per-shard", "700", "--seed", "3", "--unit-cells", "512", "--block-cells", "256", "--quiet"]


def _start(corpus, out) -> tuple[subprocess.Popen, float]:
    """Start a CLI build and return it once its work has begun (the work directory exists), with the time."""
    proc = subprocess.Popen([sys.executable, "-m", "ingest", *_cmd(corpus, out)], cwd=ROOT, stderr=subprocess.PIPE)
    while not (out / ".cellshard-work" / "params.json").exists():
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(0.01)
    return proc, time.perf_counter()


@pytest.fixture(scope="module")
def reference_run(corpus, tmp_path_factory):
    """An uninterrupted CLI build: its manifest, and how long its work took (to aim the random kills)."""
    out = tmp_path_factory.mktemp("ref") / "set"
    proc, t0 = _start(corpus, out)
    assert proc.wait(timeout=300) == 0
    return manifest_without_time(out), time.perf_counter() - t0


@pytest.fixture(scope="module")
def reference(reference_run):
    return reference_run[0]


def _cmd(corpus, out):
    return ["build", "--input", *map(str, corpus), "--out", str(out), "--format", "webdataset", *ARGS]


@pytest.mark.slow
@pytest.mark.parametrize("point", ["pass1:2", "pass2:3", "finalize:2", "manifest:0"])
def test_kill_at_named_point_then_resume(point, corpus, reference, tmp_path):
    out = tmp_path / "set"
    killed = run_cli(*_cmd(corpus, out), env={"CELLSHARD_TEST_FAULT": point})
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert not (out / "index.json").exists()  # nothing looks finished
    resumed = run_cli(*_cmd(corpus, out))
    assert resumed.returncode == 0, resumed.stderr
    assert manifest_without_time(out) == reference
    assert not (out / ".cellshard-work").exists()
    assert run_cli("verify", str(out)).returncode == 0


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2])
def test_kill_at_random_time_then_resume(seed, corpus, reference_run, tmp_path):
    reference, work = reference_run
    out = tmp_path / "set"
    proc, _ = _start(corpus, out)
    time.sleep(random.Random(seed).uniform(0.05, 0.5) * work)  # a seeded point inside the work
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL  # killed mid-run, not after it finished
    resumed = run_cli(*_cmd(corpus, out))
    assert resumed.returncode == 0, resumed.stderr
    assert manifest_without_time(out) == reference


def test_concurrent_build_is_refused(corpus, tmp_path):
    out = tmp_path / "set"
    out.mkdir()
    with BuildLock(out), pytest.raises(IngestError, match="another build is writing"):
        small_build(corpus, out)


@pytest.mark.slow
def test_stale_lock_of_a_dead_process_is_taken_over(corpus, tmp_path):
    out = tmp_path / "set"
    out.mkdir()
    code = (
        "import os, pathlib; from ingest.lock import BuildLock; "
        f"BuildLock(pathlib.Path({str(out)!r})).__enter__(); os.kill(os.getpid(), 9)"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=False)
    assert (out / ".cellshard-build.lock").exists()  # left behind by the killed holder
    small_build(corpus, out)
    assert (out / "index.json").exists()


def test_changed_options_after_interruption_are_refused(corpus, tmp_path):
    out = tmp_path / "set"
    killed = run_cli(*_cmd(corpus, out), env={"CELLSHARD_TEST_FAULT": "pass1:1"})
    assert killed.returncode == -signal.SIGKILL
    other = run_cli(*_cmd(corpus, out)[:-1], "--seed", "4")
    assert other.returncode == 1 and "interrupted build with other inputs or options" in other.stderr
    assert "Traceback" not in other.stderr
