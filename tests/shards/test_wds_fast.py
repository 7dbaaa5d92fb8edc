"""The compiled WebDataset run parser (``shards.format.webdataset.fast``) against the Python sample
reader: equal on every run of real shards, on cell ids the fast path leaves to the JSON parser
(escapes, non-ASCII), on a tar written by stock ``tarfile`` (other headers), and with the same errors
for a corrupt sample."""

from __future__ import annotations

import io
import json
import tarfile
import zlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from shards.errors import ShardError
from shards.format.records import CellBlock
from shards.format.webdataset import fast
from shards.format.webdataset import reader as wds_reader
from shards.format.webdataset.names import idx_name, sample_key, shard_name
from shards.format.webdataset.reader import read_idx, read_run, read_samples
from shards.format.webdataset.writer import write_shard


def _equal(tar: Path, idx: np.ndarray, a: int, b: int, first_cell: int, size: int | None) -> None:
    genes, counts, offsets, ids = read_run(tar, idx, a, b, first_cell=first_cell, size=size)
    samples = read_samples(tar, idx, a, b, first_cell=first_cell, size=size)
    want_g = np.concatenate([s[0] for s in samples]) if samples else np.zeros(0, np.int32)
    want_c = np.concatenate([s[1] for s in samples]) if samples else np.zeros(0, np.int32)
    assert genes.dtype == counts.dtype == np.int32 and offsets.dtype == np.int64
    assert np.array_equal(genes, want_g) and np.array_equal(counts, want_c)
    assert np.array_equal(np.diff(offsets), [len(s[0]) for s in samples])
    assert ids.dtype == object and list(ids) == [s[2]["cell_id"] for s in samples]


@pytest.fixture
def slow_reads(monkeypatch) -> list[tuple[int, int]]:
    """The runs ``read_run`` handed to the Python reader."""
    calls: list[tuple[int, int]] = []

    def counted(tar, idx, a, b, **kw):
        calls.append((a, b))
        return read_samples(tar, idx, a, b, **kw)

    monkeypatch.setattr(wds_reader, "read_samples", counted)
    return calls


def test_every_run_of_a_built_set(wds_set, slow_reads):
    manifest = json.loads((wds_set / "index.json").read_text())
    rng = np.random.default_rng(1)
    for shard in manifest["shards"]:
        idx = read_idx(wds_set / shard["files"][0]["path"])
        n = len(idx)
        runs = [(0, n), (0, 0), (n - 1, n), (0, 1)] + [tuple(sorted(rng.integers(0, n + 1, 2))) for _ in range(5)]
        for a, b in runs:
            _equal(wds_set / shard["path"], idx, int(a), int(b), shard["first_cell"], shard["bytes"])
    assert slow_reads == []  # the writer's shards take the compiled path, every run


def _block(ids: list[str]) -> CellBlock:
    rng = np.random.default_rng(3)
    lengths = rng.integers(0, 50, size=len(ids))
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    genes = rng.integers(4, 1000, size=int(offsets[-1])).astype(np.int32)
    return CellBlock(genes, genes % 7 + 1, offsets, pa.table({"cell_id": ids, "n": list(range(len(ids)))}))


def test_ids_the_fast_path_leaves_to_the_json_parser(tmp_path, slow_reads):
    ids = ["plain", 'with "quote"', "back\\slash", "ünï-cødé", "tab\tid", "", "last"]
    write_shard(tmp_path, 0, 40, _block(ids))
    idx = read_idx(tmp_path / idx_name(0))
    for a, b in [(0, 7), (0, 1), (3, 4), (4, 7), (1, 2)]:
        _equal(tmp_path / shard_name(0), idx, a, b, 40, None)
    assert list(read_run(tmp_path / shard_name(0), idx, 0, 7, first_cell=40)[3]) == ids
    assert (0, 1) not in slow_reads and (1, 2) in slow_reads  # "plain" fast, 'with "quote"' not


def test_a_tar_from_stock_tarfile_reads_the_same(tmp_path, slow_reads):
    """Other headers (GNU format, mtime, modes, member order): the Python reader takes them."""
    block = _block([f"cell{i}" for i in range(5)])
    buf, idx = io.BytesIO(), []
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for i in range(5):
            start = buf.tell()
            g = block.genes[block.offsets[i] : block.offsets[i + 1]]
            members = {"json": json.dumps({"cell_id": f"cell{i}"}).encode()}
            for ext, values in (("counts.npy", g % 7 + 1), ("genes.npy", g)):  # another order
                npy = io.BytesIO()
                np.save(npy, values.astype("<i4"))
                members[ext] = npy.getvalue()
            for ext, data in members.items():
                info = tarfile.TarInfo(f"{sample_key(i)}.{ext}")
                info.size, info.mtime = len(data), 1_700_000_000
                tar.addfile(info, io.BytesIO(data))
            tar.fileobj.flush()
            idx.append((start, buf.tell() - start, len(g), 0))
    data = buf.getvalue()
    idx = np.array(idx, dtype=np.int64)
    idx[:, 3] = [zlib.crc32(data[a : a + b]) for a, b, _, _ in idx]
    (tmp_path / "x.tar").write_bytes(data)
    for a, b in [(0, 5), (2, 3)]:
        _equal(tmp_path / "x.tar", idx, a, b, 0, None)
    assert slow_reads == [(0, 5), (2, 3)]


def test_a_corrupt_sample_raises_what_the_python_reader_raises(tmp_path):
    write_shard(tmp_path, 0, 0, _block([f"c{i}" for i in range(6)]))
    idx = read_idx(tmp_path / idx_name(0))
    tar = tmp_path / shard_name(0)
    data = bytearray(tar.read_bytes())
    data[int(idx[3, 0]) + 600] ^= 1
    tar.write_bytes(bytes(data))
    with pytest.raises(ShardError, match="sample 3 fails its crc32 check"):
        read_run(tar, idx, 0, 6, first_cell=0)
    _equal(tar, idx, 0, 3, 0, None)  # the samples before it still read


def test_sample_keys_are_the_writers():
    for first in (0, 123_456, 999_999_999_988):
        keys = fast.sample_keys(first, 12)
        assert [bytes(k).decode() for k in keys] == [sample_key(i) for i in range(first, first + 12)]
