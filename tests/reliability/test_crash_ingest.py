"""Crash and resume of ``ingest build``: SIGKILL at named fault points and at seeded random times, for
an h5ad source (to WebDataset) and a SOMA source (a Census-shaped copy, to Zarr); every rerun ends
byte-identical to an uninterrupted build: the same manifest with every shard's sha256 (``created_at``
aside), the same files, nothing temporary left behind.

Fault points (``shards/faults.py``): ``pass1-block`` (a block of pass 1 read, its unit file not yet
written), ``pass1`` / ``pass2`` / ``finalize`` (after that many units or shards), ``bucket`` (a batch
appended to an open bucket file), ``rename:<file>`` (the file complete under its temporary name, not yet
renamed: a shard, or ``index.json`` itself), ``manifest`` (everything written but the manifest) and
``committed`` (the manifest written, the work files not yet removed: the rerun only cleans up).
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ingest.census_copy import write_census_copy
from shards import verify_shard_set
from tests.conftest import ROOT, manifest_without_time, run_cli

COMMON_ARGS = "--cells-per-shard 700 --seed 3 --unit-cells 512 --block-cells 256 --quiet".split()
H5AD_ARGS = ["--format", "webdataset", *COMMON_ARGS]
SOMA_ARGS = ["--format", "zarr", "--val-fraction", "0.2", *COMMON_ARGS]


@pytest.fixture(scope="module")
def census(corpus, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("crash-census") / "soma"
    write_census_copy(corpus, root, version="2025-01-30")
    return root


def _cmd(source: str, corpus, census, out: Path) -> list[str]:
    if source == "h5ad":
        return ["build", "--input", *map(str, corpus), "--out", str(out), *H5AD_ARGS]
    return ["build", "--census-version", "2025-01-30", "--census-uri", str(census), "--out", str(out), *SOMA_ARGS]


def files_of(root: Path) -> list[str]:
    """Every file and directory under ``root`` (relative), hidden ones included."""
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))


def _start(cmd: list[str], out: Path) -> subprocess.Popen:
    """Start a CLI build and return it once its work has begun (the work directory exists)."""
    proc = subprocess.Popen([sys.executable, "-m", "ingest", *cmd], cwd=ROOT, stderr=subprocess.PIPE)
    while not (out / ".cellshard-work" / "params.json").exists():
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(0.01)
    return proc


@pytest.fixture(scope="module")
def references(corpus, census, tmp_path_factory) -> dict:
    """Uninterrupted CLI builds per source: manifest, file list, and how long the work took (to aim the
    random kills)."""
    out = {}
    for source in ("h5ad", "soma"):
        root = tmp_path_factory.mktemp(f"ref-{source}") / "set"
        proc = _start(_cmd(source, corpus, census, root), root)
        t0 = time.perf_counter()
        assert proc.wait(timeout=300) == 0, proc.stderr.read()
        out[source] = (manifest_without_time(root), files_of(root), time.perf_counter() - t0)
    return out


def _resume_and_compare(cmd, out: Path, reference, committed: bool = False) -> None:
    """Rerun the killed build; it must end as the uninterrupted one. ``committed``: the kill came after the
    manifest was written (while the build removed its work files): the set is whole before the rerun."""
    manifest, files, _ = reference
    if committed:
        assert manifest_without_time(out) == manifest and verify_shard_set(out) == []
    else:
        assert not (out / "index.json").exists()  # nothing looks finished
    resumed = run_cli(*cmd)
    assert resumed.returncode == 0, resumed.stderr
    assert manifest_without_time(out) == manifest  # every shard's sha256, sizes, counts, source, ...
    assert files_of(out) == files  # no temporary file, no work directory left
    assert verify_shard_set(out) == []


NAMED = {
    "h5ad": [
        "pass1-block:3",
        "pass1:2",
        "bucket:3",
        "pass2:3",
        "rename:shard-000001.tar:1",
        "finalize:2",
        "manifest:1",
        "rename:index.json:1",
        "committed:1",
    ],
    "soma": ["pass1-block:3", "bucket:3", "rename:shard-000001.zarr:1", "rename:index.json:1"],
}


@pytest.mark.slow
@pytest.mark.parametrize(("source", "point"), [(s, p) for s, points in NAMED.items() for p in points])
def test_kill_at_named_point_then_resume(source, point, corpus, census, references, tmp_path):
    out = tmp_path / "set"
    cmd = _cmd(source, corpus, census, out)
    killed = run_cli(*cmd, env={"CELLSHARD_TEST_FAULT": point})
    assert killed.returncode == -signal.SIGKILL, killed.stderr  # the point was reached, the build died there
    _resume_and_compare(cmd, out, references[source], committed=point.startswith("committed"))


@pytest.mark.slow
@pytest.mark.parametrize(("source", "seed"), [("h5ad", 1), ("h5ad", 2), ("soma", 3)])
def test_kill_at_random_time_then_resume(source, seed, corpus, census, references, tmp_path):
    out = tmp_path / "set"
    cmd = _cmd(source, corpus, census, out)
    proc = _start(cmd, out)
    # a seeded point inside the work (well inside: the reference may have run on a busier machine)
    time.sleep(random.Random(seed).uniform(0.05, 0.4) * references[source][2])
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL  # killed mid-run, not after it finished
    # on a warm machine the kill can land after the commit point, while the work files are removed
    _resume_and_compare(cmd, out, references[source], committed=(out / "index.json").exists())


@pytest.mark.slow
def test_a_killed_worker_fails_the_build_cleanly_and_a_rerun_completes(corpus, census, references, tmp_path):
    """A spawned worker killed mid-unit (as the OOM killer would): one clear line, exit 1, then a rerun."""
    out = tmp_path / "set"
    cmd = _cmd("h5ad", corpus, census, out)
    failed = run_cli(*cmd, "--workers", "2", env={"CELLSHARD_TEST_FAULT": "bucket:2"})
    assert failed.returncode == 1, failed.stderr
    assert "a worker process died" in failed.stderr and "Traceback" not in failed.stderr
    _resume_and_compare(cmd, out, references["h5ad"])


def test_changed_options_after_interruption_are_refused(corpus, census, tmp_path):
    out = tmp_path / "set"
    cmd = _cmd("h5ad", corpus, census, out)
    killed = run_cli(*cmd, env={"CELLSHARD_TEST_FAULT": "pass1:1"})
    assert killed.returncode == -signal.SIGKILL
    other = run_cli(*cmd[:-1], "--seed", "4")
    assert other.returncode == 1 and "interrupted build with other inputs or options" in other.stderr
    assert "Traceback" not in other.stderr
