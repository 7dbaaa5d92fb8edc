"""Remote shard sets over real HTTP (a Range-capable server) and S3 (moto's server), on 127.0.0.1."""

from __future__ import annotations

import shutil
import socket

import pytest
import torch

from shards import ShardedCellDataset, ShardError
from shards.storage.remote import redact


def _epoch(root, **kw):
    ds = ShardedCellDataset(
        root, batch_size=16, context_length=64, seed=4, rank=0, world_size=1, return_cell_ids=True, **kw
    )
    ds.set_epoch(1)
    return list(ds)


def _same(a, b):
    assert [x["cell_id"] for x in a] == [y["cell_id"] for y in b]
    assert all(torch.equal(x["input_ids"], y["input_ids"]) for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize("fmt", ["zarr", "wds"])
def test_http_reads_equal_local_reads(http_root, fmt):
    url, root, _ = http_root
    _same(_epoch(f"{url}/{fmt}"), _epoch(root / fmt))


def test_a_weighted_epoch_over_http_equals_the_local_one(http_root):
    """labels.npz is fetched and checked like the other files; the draw is the local one."""
    url, root, _ = http_root
    kw = {"weighting": {"column": "cell_type"}, "num_samples": 300}
    _same(_epoch(f"{url}/wds", **kw), _epoch(root / "wds", **kw))


def test_http_cache_is_bounded_and_checked(http_root, tmp_path):
    url, root, _ = http_root
    shard_bytes = max(p.stat().st_size for p in (root / "wds").glob("*.tar"))
    cache = tmp_path / "cache"
    _same(_epoch(f"{url}/wds", cache_dir=cache, cache_bytes=int(2.5 * shard_bytes)), _epoch(root / "wds"))
    cached = [p for p in cache.iterdir() if p.is_dir() and not p.name.startswith(".")]
    assert 1 <= len(cached) <= 3  # least recently used shards were evicted
    for p in cache.iterdir():
        if p.is_dir() and not p.name.startswith("."):
            shutil.rmtree(p)
    tar = next((root / "zarr").glob("*.parquet"))
    tar.write_bytes(tar.read_bytes()[:-10] + b"0123456789")  # the server now serves a corrupt file
    with pytest.raises(ShardError, match="sha256"):
        _epoch(f"{url}/zarr", cache_dir=tmp_path / "c2", cache_bytes=10**9)


def test_transient_http_errors_are_retried(http_root):
    url, root, handler = http_root
    handler.fail_first = 2
    _same(_epoch(f"{url}/wds"), _epoch(root / "wds"))
    assert handler.failures == 2


def test_credentials_are_never_shown(http_root):
    url, _, _ = http_root
    secret = url.replace("http://", "http://alice:hunter2@") + "/nothing"
    with pytest.raises(ShardError) as err:
        _epoch(secret)
    assert "hunter2" not in str(err.value) and "***@" in str(err.value)
    assert redact("s3://key:secret@bucket/x") == "s3://***@bucket/x"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_s3_reads_equal_local_reads(zarr_set, monkeypatch):
    import s3fs
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    try:
        for key, value in {
            "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test",
            "AWS_DEFAULT_REGION": "us-east-1",
        }.items():
            monkeypatch.setenv(key, value)
        opts = {"endpoint_url": f"http://127.0.0.1:{port}"}
        fs = s3fs.S3FileSystem(client_kwargs=opts)
        fs.mkdir("cells")
        fs.put(str(zarr_set), "cells/set", recursive=True)
        got = _epoch("s3://cells/set", storage_options={"client_kwargs": opts})
        _same(got, _epoch(zarr_set))
    finally:
        server.stop()


def test_cache_never_evicts_a_shard_being_read(http_root, tmp_path):
    from shards.loading.readers import ShardSetReader

    url, root, _ = http_root
    one = max(p.stat().st_size for p in (root / "wds").glob("*.tar"))
    reader = ShardSetReader(f"{url}/wds", cache_dir=tmp_path / "c", cache_bytes=one)  # room for about one shard
    with reader.open_shard(0) as access:
        first = access.local
        reader.read(1, 0, 5)  # needs room: evicting shard 0 would pull it from under our feet
        assert first.exists()
        reader.read(2, 0, 5)
        assert first.exists()
    reader.read(3, 0, 5)  # no longer in use: now it may go
    kept = [p for p in (tmp_path / "c").iterdir() if p.is_dir() and not p.name.startswith(".")]
    assert first not in kept
