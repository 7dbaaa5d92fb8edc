"""The Zarr reader that decodes a shard's chunks itself (``shards.format.zarr.chunks``) against stock
zarr-python, on shards with many small chunks (so that ranges start, end and span inside chunks, and
the chunk kept from the previous run is used), and its checks: a flipped byte in a chunk or in the
chunk index is refused with the file and chunk named; an array in another layout goes through zarr."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import zarr

from shards.errors import ShardError
from shards.format.access import ShardAccess
from shards.format.records import CellBlock
from shards.format.zarr import reader as zreader
from shards.format.zarr import writer as zwriter
from shards.format.zarr.chunks import ShardedArray, load_doc, parse_layout

CHUNK = 1000  # values per inner chunk in these shards (the writer's default is 256 Ki)


def _block(rng: np.random.Generator, n: int) -> CellBlock:
    lengths = rng.integers(0, 400, size=n)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    genes = rng.integers(4, 30_000, size=int(offsets[-1])).astype(np.int32)
    counts = rng.integers(1, 50, size=int(offsets[-1])).astype(np.int32)
    return CellBlock(genes, counts, offsets, pa.table({"cell_id": [f"c{i}" for i in range(n)]}))


@pytest.fixture
def shard(tmp_path, monkeypatch) -> tuple[Path, CellBlock]:
    monkeypatch.setattr(zwriter, "CHUNK", CHUNK)
    block = _block(np.random.default_rng(5), 600)
    zwriter.write_shard(tmp_path, 0, 0, block)
    return tmp_path, block


def _access(root: Path, block: CellBlock | None = None) -> ShardAccess:
    n_cells, n_tokens = (len(block), int(block.offsets[-1])) if block is not None else (0, 0)
    entry = {"path": "shard-000000.zarr", "n_cells": n_cells, "n_tokens": n_tokens, "files": []}
    return ShardAccess(entry, str(root), root, lambda *a: b"", {})


def _array(root: Path, name: str) -> ShardedArray:
    access = _access(root)
    doc = load_doc((root / f"shard-000000.zarr/{name}/zarr.json").read_bytes(), name)
    array = ShardedArray.open(access.read_range, f"shard-000000.zarr/{name}", doc, name)
    assert array is not None and array.chunk == CHUNK
    return array


def test_ranges_equal_zarr_python(shard):
    root, block = shard
    group = zarr.open_group(str(root / "shard-000000.zarr"), mode="r")
    access = _access(root, block)
    rng = np.random.default_rng(0)
    for name in ("genes", "counts", "offsets"):
        array = _array(root, name)
        stock = group[name]
        n = stock.shape[0]
        assert n > 20 * CHUNK or name == "offsets"
        ranges = [(0, n), (0, 0), (n - 1, n)] + [
            (min(n, a), min(n, b)) for a, b in [(CHUNK, 2 * CHUNK), (CHUNK - 1, CHUNK + 1)]
        ]
        ranges += [tuple(sorted(rng.integers(0, n + 1, size=2))) for _ in range(60)]
        at = 0
        while at < n:  # sequential runs, as the loader reads them: a chunk is shared by two runs
            step = int(rng.integers(1, 3 * CHUNK))
            ranges.append((at, min(n, at + step)))
            at += step
        with pytest.raises(ShardError, match="outside"):
            array.read(access.read_range, 0, n + 1)
        for lo, hi in ranges:
            got = array.read(access.read_range, int(lo), int(hi))
            assert got.dtype == stock.dtype and np.array_equal(got, stock[lo:hi]), (name, lo, hi)


def test_the_shard_reader_reads_what_was_written(shard):
    root, block = shard
    reader = zreader.ZarrShardReader(_access(root, block).shard)
    access = _access(root, block)
    assert np.array_equal(reader.offsets(access), block.offsets)
    for a, b in [(0, 600), (17, 18), (100, 350), (599, 600), (350, 351)]:
        genes = reader._values(access, "genes", int(block.offsets[a]), int(block.offsets[b]))
        assert np.array_equal(genes, block.genes[block.offsets[a] : block.offsets[b]])


def _flip(path: Path, at: int) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0x10
    path.write_bytes(bytes(data))


def test_a_flipped_byte_in_a_chunk_names_the_chunk(shard):
    root, block = shard
    array = _array(root, "genes")
    c = 7
    _flip(root / array.rel, int(array.index[c, 0]) + int(array.index[c, 1]) // 2)
    access = _access(root, block)
    with pytest.raises(ShardError, match=r"genes/c/0 \(chunk 7\): fails its crc32c"):
        array.read(access.read_range, c * CHUNK, c * CHUNK + 5)
    array.read(access.read_range, 0, CHUNK)  # the other chunks still read


def test_a_flipped_byte_in_the_chunk_index_is_refused(shard):
    root, _ = shard
    path = root / "shard-000000.zarr/counts/c/0"
    _flip(path, path.stat().st_size - 9)
    with pytest.raises(ShardError, match=r"counts/c/0 \(chunk index\): fails its crc32c"):
        _array(root, "counts")


def test_a_truncated_shard_file_is_refused(shard):
    root, _ = shard
    array = _array(root, "genes")
    path = root / array.rel
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(ShardError, match="chunk index"):
        _array(root, "genes")


def test_another_layout_is_read_through_zarr(tmp_path):
    """A shard written by another tool (no sharding codec, other compressor) still reads, via zarr."""
    block = _block(np.random.default_rng(9), 50)
    group = zarr.open_group(str(tmp_path / "shard-000000.zarr"), mode="w", zarr_format=3)
    for name in ("genes", "counts", "offsets"):
        data = getattr(block, name)
        group.create_array(name, shape=data.shape, dtype=data.dtype, chunks=(333,))[:] = data
    doc = load_doc((tmp_path / "shard-000000.zarr/genes/zarr.json").read_bytes(), "genes")
    assert parse_layout(doc) is None
    reader = zreader.ZarrShardReader(_access(tmp_path, block).shard)
    access = _access(tmp_path, block)
    assert reader._array(access, "genes") is None
    assert np.array_equal(reader.offsets(access), block.offsets)
    assert np.array_equal(reader._values(access, "counts", 10, 900), block.counts[10:900])


def test_the_writers_layout_is_recognised():
    doc = {
        "zarr_format": 3,
        "shape": [10],
        "data_type": "int32",
        "fill_value": 0,
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [16]}},
        "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
        "codecs": [
            {
                "name": "sharding_indexed",
                "configuration": {
                    "chunk_shape": [4],
                    "codecs": [
                        {"name": "bytes", "configuration": {"endian": "little"}},
                        {"name": "zstd"},
                        {"name": "crc32c"},
                    ],
                    "index_codecs": [{"name": "bytes", "configuration": {"endian": "little"}}, {"name": "crc32c"}],
                    "index_location": "end",
                },
            }
        ],
    }
    assert parse_layout(doc) == (np.dtype("<i4"), 10, 4, 16)
    for edit in (
        lambda d: d["codecs"][0]["configuration"].update(index_location="start"),
        lambda d: d["codecs"][0]["configuration"]["codecs"].pop(),  # no crc32c: never read unchecked
        lambda d: d.update(fill_value=7),
        lambda d: d.update(data_type="float32"),
        lambda d: d["codecs"][0]["configuration"]["codecs"][0]["configuration"].update(endian="big"),
    ):
        bad = copy.deepcopy(doc)
        edit(bad)
        assert parse_layout(bad) is None
