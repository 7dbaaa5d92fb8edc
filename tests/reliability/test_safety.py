"""Safety: shards are read without pickle, tar members cannot name paths outside their sample, the
build lock is released by a crash (flock) or detected stale by pid, host and boot (holder record),
and credentials in URLs never reach messages."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import zlib
from pathlib import Path

import numpy as np
import pytest

from ingest.errors import IngestError
from ingest.pipeline.lock import LOCK_NAME, BuildLock, holder_record, holder_state
from shards import ShardedCellDataset, ShardError, dump_manifest, load_manifest
from shards.format.webdataset import read_idx, sample_key
from shards.format.webdataset.writer import _member
from shards.storage.atomic import sha256_file
from tests.conftest import ROOT, small_build


class _Trap:
    """Unpickling this creates a file: proof that a reader ran pickle."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def _replace_first_sample(root: Path, members: list[tuple[str, bytes] | tarfile.TarInfo], n_tokens: int = 3) -> dict:
    """Rewrite sample 0 of shard 0 of a WebDataset set with other members (of ``n_tokens`` tokens), with
    a valid crc32 and token count in the sample index and a re-sealed manifest: only the reader's own
    rules stand between it and the data."""
    manifest = load_manifest(root)
    shard = manifest["shards"][0]
    tar, idx_path = root / shard["path"], root / shard["files"][0]["path"]
    idx = read_idx(idx_path)
    data = tar.read_bytes()
    parts = []
    for m in members:
        if isinstance(m, tarfile.TarInfo):
            parts.append(m.tobuf(tarfile.USTAR_FORMAT))
        else:
            parts.append(_member(*m))
    sample = b"".join(parts)
    old_len = int(idx[0, 1])
    data = sample + data[old_len:]
    idx[:, 0] += len(sample) - old_len
    delta = n_tokens - int(idx[0, 2])
    idx[0] = (0, len(sample), n_tokens, zlib.crc32(sample))
    tar.write_bytes(data)
    buf = io.BytesIO()
    np.save(buf, idx, allow_pickle=False)
    idx_path.write_bytes(buf.getvalue())
    shard.update(sha256=sha256_file(tar), bytes=tar.stat().st_size, n_tokens=shard["n_tokens"] + delta)
    manifest["n_tokens"] += delta
    manifest["splits"][shard["split"]]["n_tokens"] += delta
    shard["files"][0].update(sha256=sha256_file(idx_path), bytes=idx_path.stat().st_size)
    dump_manifest(root, manifest)
    return shard


def _read_all(root: Path) -> None:
    ds = ShardedCellDataset(root, batch_size=8, context_length=32, rank=0, world_size=1, remainder="pad")
    ds.set_epoch(0)
    list(ds)


@pytest.fixture
def wds_copy(wds_set, tmp_path) -> Path:
    root = tmp_path / "set"
    shutil.copytree(wds_set, root)
    return root


def _npy(array: np.ndarray, allow_pickle: bool = False) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=allow_pickle)
    return buf.getvalue()


def _sample(genes: bytes, meta: bytes = b'{"cell_id": "x"}') -> list[tuple[str, bytes]]:
    """Members of sample 0 with these ``genes`` bytes (three counts of 1)."""
    key = sample_key(0)
    return [(f"{key}.genes.npy", genes), (f"{key}.counts.npy", _npy(np.ones(3, "<i4"))), (f"{key}.json", meta)]


def test_shards_are_read_without_pickle(wds_copy, tmp_path):
    trap = tmp_path / "pickle-ran"
    evil = np.array([_Trap(str(trap))], dtype=object)
    _replace_first_sample(wds_copy, _sample(_npy(evil, allow_pickle=True)))
    with pytest.raises(ShardError, match=r"sample 0: unreadable \.npy member .*allow_pickle=False"):
        _read_all(wds_copy)
    assert not trap.exists()
    # a float or int64 array is not a cell record either (the contract says int32)
    _replace_first_sample(wds_copy, _sample(_npy(np.arange(3, dtype=np.float64))))
    with pytest.raises(ShardError, match="must be int32"):
        _read_all(wds_copy)


def _link(name: str, target: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = tarfile.SYMTYPE, target
    return info


@pytest.mark.parametrize(
    ("name", "needle"),
    [
        ("/etc/passwd", "unsafe name"),
        ("../../escape.json", "unsafe name"),
        ("x/../../y.json", "unsafe name"),
        ("c000000000007.json", "does not belong to sample c000000000000"),
        ("c000000000000.pyd", "unexpected"),
        ("link", "not a regular file"),
    ],
)
def test_tar_members_outside_their_sample_are_refused(name, needle, wds_copy):
    members = _sample(_npy(np.arange(3, dtype="<i4")))[:2]
    members.append(_link(f"{sample_key(0)}.json", "/etc/passwd") if name == "link" else (name, b"{}"))
    _replace_first_sample(wds_copy, members)
    with pytest.raises(ShardError, match=needle):
        _read_all(wds_copy)


def test_a_resealed_sample_is_read_when_it_is_sound(wds_copy):
    """The tampering helper itself: the same rewrite with proper members reads back (else the two tests
    above could pass for the wrong reason)."""
    meta = json.dumps({"cell_id": "resealed:0"}).encode()
    _replace_first_sample(wds_copy, _sample(_npy(np.arange(5, 8, dtype="<i4")), meta))
    ds = ShardedCellDataset(
        wds_copy, batch_size=8, context_length=32, rank=0, world_size=1, remainder="pad", return_cell_ids=True
    )
    ds.set_epoch(0)
    assert "resealed:0" in {c for b in ds for c in b["cell_id"]}


# -- the build lock ------------------------------------------------------------------------------------


def _holder(out: Path, mode: str) -> subprocess.Popen:
    """A process holding the build lock of ``out`` until killed."""
    code = (
        "import pathlib, sys, time; from ingest.pipeline.lock import BuildLock; "
        f"BuildLock(pathlib.Path({str(out)!r}), mode={mode!r}).__enter__(); print('held', flush=True); "
        "time.sleep(600)"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


@pytest.mark.parametrize("mode", ["flock", "record"])
def test_a_live_lock_is_refused_and_a_killed_holders_lock_is_taken_over(mode, tmp_path):
    out = tmp_path / "set"
    out.mkdir()
    holder = _holder(out, mode)
    with pytest.raises(IngestError, match=f"another build is writing to this directory \\(pid {holder.pid} on "):
        BuildLock(out, mode).__enter__()
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert (out / LOCK_NAME).exists()  # left behind by the killed holder
    with BuildLock(out, mode) as lock:
        assert lock.took_over.startswith(f"pid {holder.pid} on {socket.gethostname()}")
        assert json.loads((out / LOCK_NAME).read_text())["pid"] == os.getpid()
    assert not (out / LOCK_NAME).exists()


def test_holder_records_are_judged_by_pid_start_time_host_and_boot(tmp_path):
    me = holder_record()
    host, boot = me["host"], me["boot_id"]
    assert holder_state(me, host=host, boot_id=boot) == "alive"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    assert holder_state({**me, "pid": int(dead.stdout)}, host=host, boot_id=boot) == "stale"
    assert holder_state({**me, "start_ticks": me["start_ticks"] - 1}, host=host, boot_id=boot) == "stale"  # reused
    assert holder_state({**me, "boot_id": "another-boot"}, host=host, boot_id=boot) == "stale"  # rebooted
    assert holder_state({**me, "host": "node-17"}, host=host, boot_id=boot) == "unknown"
    # a record of another host, on a filesystem without flock: refused, with the way out
    out = tmp_path / "set"
    out.mkdir()
    (out / LOCK_NAME).write_text(json.dumps({**me, "host": "node-17", "pid": 4242}))
    with pytest.raises(IngestError, match=f"pid 4242 on node-17 .* delete {out / LOCK_NAME}"):
        BuildLock(out, "record").__enter__()


def test_concurrent_build_is_refused(corpus, tmp_path):
    out = tmp_path / "set"
    out.mkdir()
    with BuildLock(out), pytest.raises(IngestError, match="another build is writing"):
        small_build(corpus, out)


@pytest.mark.slow
def test_a_build_killed_while_holding_the_lock_does_not_block_the_next(corpus, tmp_path):
    from tests.conftest import run_cli

    out = tmp_path / "set"
    cmd = ["build", "--input", *map(str, corpus), "--out", str(out), "--quiet"]
    assert run_cli(*cmd, env={"CELLSHARD_TEST_FAULT": "pass1:1"}).returncode == -signal.SIGKILL
    assert (out / LOCK_NAME).exists()
    rerun = run_cli(*cmd)
    assert rerun.returncode == 0 and "took over the lock of a build that is no longer running" in rerun.stderr
    assert not (out / LOCK_NAME).exists()


# -- credentials -----------------------------------------------------------------------------------


@pytest.mark.slow
def test_credentials_in_a_data_url_reach_no_log_config_or_checkpoint(http_root, tmp_path):
    """A run over ``https://user:password@host/...`` with a secret in its storage options: the secret is in
    no message, no file the run writes (config.yaml, hparams, metrics, checkpoints, history)."""
    from tests.training.test_training_runs import _args, ok, train

    url, _, _ = http_root
    secret_url = url.replace("http://", "http://alice:hunter2@") + "/zarr"
    run = tmp_path / "run"
    proc = ok(
        train(
            "fit",
            *_args(
                secret_url,
                run,
                "--data.val_split",
                "null",
                "--data.num_workers",
                "0",
                "--data.storage_options",
                '{"headers": {"X-Api-Key": "s3kr1t"}}',
                steps=2,
            ),
        )
    )
    written = [p for p in run.rglob("*") if p.is_file()]
    assert any(p.suffix == ".ckpt" for p in written) and any(p.name == "config.yaml" for p in written)
    for secret in ("hunter2", "s3kr1t"):
        assert secret not in proc.stdout + proc.stderr
        assert [p.name for p in written if secret.encode() in p.read_bytes()] == []
    assert "***@" in (run / "checkpoints" / "config.yaml").read_text()
    # and a failing URL is reported without them
    bad = train("fit", *_args(secret_url.replace("/zarr", "/nothing"), tmp_path / "r2", steps=1))
    assert bad.returncode == 1 and "***@" in bad.stderr and "hunter2" not in bad.stderr + bad.stdout
