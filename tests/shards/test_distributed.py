"""Real multi-process runs: torchrun with 2 ranks on one node, and a 2-"node" c10d job on localhost."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from shards import load_manifest

PROBE = Path(__file__).with_name("dist_probe.py")


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(*args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", *args]


def _check(out: Path, root: Path, world: int) -> None:
    records = sorted((json.loads(p.read_text()) for p in out.glob("rank*.json")), key=lambda r: r["rank"])
    assert [r["rank"] for r in records] == list(range(world)) and {r["world_size"] for r in records} == {world}
    n_train = load_manifest(root)["splits"]["train"]["n_cells"]
    for epoch in range(2):
        counts = {r["epochs"][epoch]["batches"] for r in records}
        assert len(counts) == 1  # equal batch counts on every rank: no hang at the last step
        cells = [c for r in records for c in r["epochs"][epoch]["cells"]]
        assert len(cells) == len(set(cells)) and n_train - len(cells) < world * 8  # each cell once (drop policy)
    for r in records:  # order and shard-to-rank assignment change between epochs
        assert set(r["epochs"][0]["cells"]) != set(r["epochs"][1]["cells"])


@pytest.mark.slow
def test_torchrun_two_ranks(zarr_set, tmp_path):
    cmd = _torchrun(
        "--nproc-per-node=2", f"--master-port={_port()}", str(PROBE), str(zarr_set), str(tmp_path), "1", "epochs"
    )
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    _check(tmp_path, zarr_set, 2)


@pytest.mark.slow
def test_two_nodes_c10d_on_localhost(wds_set, tmp_path):
    endpoint = f"127.0.0.1:{_port()}"
    cmd = _torchrun(
        "--nnodes=2",
        "--nproc-per-node=1",
        "--rdzv-backend=c10d",
        f"--rdzv-endpoint={endpoint}",
        "--rdzv-id=cellshard-test",
        str(PROBE),
        str(wds_set),
        str(tmp_path),
        "0",
        "epochs",
    )
    nodes = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    for node in nodes:
        _, err = node.communicate(timeout=300)
        assert node.returncode == 0, err[-3000:]
    _check(tmp_path, wds_set, 2)


def _records(out: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(out.glob("rank*.json"))]


@pytest.mark.slow
@pytest.mark.parametrize(("before", "after"), [(2, 1), (1, 2)])
def test_elastic_resume_on_another_world_size(zarr_set, tmp_path, before, after):
    """Stop a job mid-epoch, resume it on another number of ranks: every remaining cell exactly once."""
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    global_batch = 16
    for nproc, out, tail in [
        (before, first, ["stop", "37", str(global_batch)]),
        (after, second, ["resume", str(first / "state.json"), str(global_batch)]),
    ]:
        cmd = _torchrun(
            f"--nproc-per-node={nproc}", f"--master-port={_port()}", str(PROBE), str(zarr_set), str(out), "1", *tail
        )
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
    served = [c for out in (first, second) for r in _records(out) for c in r["epochs"][0]["cells"]]
    n_train = load_manifest(zarr_set)["splits"]["train"]["n_cells"]
    assert len(served) == len(set(served))  # nothing twice across the two runs
    assert n_train - len(served) < global_batch  # nothing lost but the stated remainder
    assert len({r["epochs"][0]["batches"] for r in _records(second)}) == 1
