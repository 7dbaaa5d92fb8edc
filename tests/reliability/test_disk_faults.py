"""Disk full and unwritable output, made real: ENOSPC from a size-limited tmpfs, EFBIG from
``RLIMIT_FSIZE``, and an output the build's user may not write (privileges dropped with ``setpriv``;
CI runs as root, for whom ``chmod`` alone changes nothing). Each time: one clear line naming the cause,
exit 1, no ``index.json``, no temporary file; and a rerun once the cause is gone ends byte-identical to
an uninterrupted build."""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.conftest import ROOT, manifest_without_time, run_cli
from tests.reliability.test_crash_ingest import COMMON_ARGS, files_of

ARGS = ["--format", "zarr", *COMMON_ARGS]
NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


def _cmd(inputs, out: Path) -> list[str]:
    return ["build", "--input", *map(str, inputs), "--out", str(out), *ARGS]


@pytest.fixture(scope="module")
def shared(corpus) -> Path:
    """A world-readable directory holding a copy of the corpus (pytest's own tmp dirs are private to root)."""
    root = Path(tempfile.mkdtemp(prefix="cellshard-disk-"))
    root.chmod(0o755)
    for p in corpus:
        shutil.copy(p, root / p.name)
        (root / p.name).chmod(0o644)
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def reference(shared, tmp_path_factory) -> tuple[dict, list[str]]:
    out = tmp_path_factory.mktemp("disk-ref") / "set"
    assert run_cli(*_cmd(sorted(shared.glob("*.h5ad")), out)).returncode == 0
    return manifest_without_time(out), files_of(out)


def _failed_cleanly(proc: subprocess.CompletedProcess, out: Path, needle: str) -> None:
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert needle in proc.stderr and "Traceback" not in proc.stderr and proc.stderr.count("error:") == 1, proc.stderr
    assert not (out / "index.json").exists()
    leftovers = [p for p in files_of(out) if ".tmp-" in p] if out.exists() else []
    assert leftovers == []  # a failed write removes its temporary file


@pytest.fixture
def small_fs(tmp_path):
    """A 2 MiB tmpfs: the build fills it part of the way through."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({proc.stderr.strip()}); the RLIMIT_FSIZE test covers the path")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


@pytest.mark.slow
def test_disk_full_fails_cleanly_and_a_rerun_with_space_completes(shared, reference, small_fs):
    out = small_fs / "set"
    cmd = _cmd(sorted(shared.glob("*.h5ad")), out)
    _failed_cleanly(run_cli(*cmd), out, "no space left on the device [Errno 28]")
    assert (out / ".cellshard-work" / "params.json").exists()  # finished work is kept for the rerun
    subprocess.run(["mount", "-o", "remount,size=64m", str(small_fs)], check=True)
    assert run_cli(*cmd).returncode == 0
    assert manifest_without_time(out) == reference[0] and files_of(out) == reference[1]


@pytest.mark.slow
def test_file_size_limit_fails_cleanly(shared, reference, tmp_path):
    out = tmp_path / "set"
    cmd = _cmd(sorted(shared.glob("*.h5ad")), out)

    def limit() -> None:  # Python ignores SIGXFSZ, so a write past the limit fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))

    proc = subprocess.run(
        [sys.executable, "-m", "ingest", *cmd], capture_output=True, text=True, cwd=ROOT, preexec_fn=limit, timeout=300
    )
    _failed_cleanly(proc, out, "file size limit exceeded [Errno 27]")
    assert run_cli(*cmd).returncode == 0
    assert manifest_without_time(out) == reference[0] and files_of(out) == reference[1]


def _nobody_env(home: Path) -> dict[str, str]:
    # numba caches compiled kernels beside the sources unless told otherwise: not writable for this user
    return {**os.environ, "HOME": str(home), "NUMBA_CACHE_DIR": str(home / "numba")}


def _as_nobody(cmd: list[str], home: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*NOBODY, sys.executable, "-m", "ingest", *cmd],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=_nobody_env(home),
        timeout=300,
    )


@pytest.fixture(scope="module")
def nobody_home(shared) -> Path:
    """A HOME for the unprivileged user; skips when this machine cannot drop privileges for our Python."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to run a build as another user")
    home = shared / "home"
    home.mkdir(exist_ok=True)
    home.chmod(0o777)
    probe = subprocess.run(
        [*NOBODY, sys.executable, "-c", "import ingest.cli"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=_nobody_env(home),
    )
    if probe.returncode != 0:
        pytest.skip(f"the unprivileged user cannot run this Python/checkout: {probe.stderr.strip()[-300:]}")
    return home


@pytest.mark.slow
def test_unwritable_output_fails_before_reading_and_an_interrupted_build_is_not_damaged(shared, reference, nobody_home):
    inputs = sorted(shared.glob("*.h5ad"))
    parent = shared / "root-only"
    parent.mkdir()  # owned by root, mode 755: the unprivileged user may not create anything in it
    out = parent / "set"
    _failed_cleanly(_as_nobody(_cmd(inputs, out), nobody_home), out, f"{parent} is not writable")
    assert not out.exists()
    # an interrupted build (root), resumed by a user who may write --out but not the work directory in it
    assert run_cli(*_cmd(inputs, out), env={"CELLSHARD_TEST_FAULT": "pass2:1"}).returncode == -9
    out.chmod(0o777)
    proc = _as_nobody(_cmd(inputs, out), nobody_home)
    _failed_cleanly(proc, out, "not writable by this user [Errno 13]")
    assert "took over the lock of a build that is no longer running" in proc.stderr  # root's stale lock
    assert "/.cellshard-work/" in proc.stderr  # names the file it could not write
    out.chmod(0o755)
    assert run_cli(*_cmd(inputs, out)).returncode == 0
    assert manifest_without_time(out) == reference[0] and files_of(out) == reference[1]
