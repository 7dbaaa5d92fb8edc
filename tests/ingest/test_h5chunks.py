"""h5ad counts read by their chunk index (``ingest/sources/h5chunks.py``) equal h5py's reads for every
layout it takes (lzf, gzip, uncompressed chunks; chunks written out of order; chunks never written),
and it declines what it does not decode (other filters, a corrupt chunk), so that h5py reads those."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import scipy.sparse as sp

from ingest.sources.h5ad import H5adInput, InputOptions
from ingest.sources.h5chunks import ChunkedArray, lzf_decompress
from tests.conftest import write_h5ad

LAYOUTS = {
    "lzf": {"compression": "lzf", "chunks": (700,)},
    "gzip": {"compression": "gzip", "chunks": (512,)},
    "plain chunks": {"chunks": (1000,)},
}


def _values(rng, n: int, dtype) -> np.ndarray:
    v = rng.integers(0, 40, size=n)
    v[rng.random(n) < 0.3] = 1  # runs and repeats: LZF back references
    return v.astype(dtype)


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("dtype", [np.float32, np.int32, np.int64])
def test_ranges_equal_h5py(tmp_path, layout, dtype):
    rng = np.random.default_rng(3)
    path = tmp_path / "a.h5"
    values = _values(rng, 20_000, dtype)
    with h5py.File(path, "w") as f:
        f.create_dataset("x", data=values, **LAYOUTS[layout])
        sparse = f.create_dataset("holes", shape=(20_000,), dtype=dtype, **LAYOUTS[layout])
        sparse[5_000:6_000] = values[5_000:6_000]  # other chunks never written: fill value 0
    with h5py.File(path, "r") as f:
        for name in ("x", "holes"):
            array = ChunkedArray.open(str(path), f[name])
            assert array is not None
            for lo, hi in [(0, 20_000), (1, 2), (699, 701), (4_321, 12_345), (19_999, 20_000), (7, 7)]:
                got = array.read(lo, hi)
                assert got is not None and got.dtype == f[name].dtype
                np.testing.assert_array_equal(got, f[name][lo:hi])


def test_chunks_out_of_file_order_and_interleaved(tmp_path):
    """Chunks written in reverse, two datasets interleaved (as incremental writers leave them)."""
    path = tmp_path / "b.h5"
    rng = np.random.default_rng(4)
    a, b = _values(rng, 9_000, np.int32), _values(rng, 9_000, np.float32)
    with h5py.File(path, "w") as f:
        da = f.create_dataset("a", shape=a.shape, dtype=a.dtype, chunks=(1_000,), compression="lzf")
        db = f.create_dataset("b", shape=b.shape, dtype=b.dtype, chunks=(1_000,), compression="lzf")
        for lo in range(8_000, -1, -1_000):
            da[lo : lo + 1_000] = a[lo : lo + 1_000]
            db[lo : lo + 1_000] = b[lo : lo + 1_000]
    with h5py.File(path, "r") as f:
        array = ChunkedArray.open(str(path), f["a"])
        assert not (np.diff(array.offsets) > 0).all()  # really out of order
        np.testing.assert_array_equal(array.read(500, 8_700), a[500:8_700])


def test_what_it_does_not_decode_is_left_to_h5py(tmp_path):
    path = tmp_path / "c.h5"
    values = _values(np.random.default_rng(5), 5_000, np.int32)
    with h5py.File(path, "w") as f:
        f.create_dataset("shuffled", data=values, chunks=(1_000,), compression="gzip", shuffle=True)
        f.create_dataset("contiguous", data=values)
        f.create_dataset("lzf", data=values, chunks=(1_000,), compression="lzf")
    with h5py.File(path, "r") as f:
        assert ChunkedArray.open(str(path), f["shuffled"]) is None
        assert ChunkedArray.open(str(path), f["contiguous"]) is None
        array = ChunkedArray.open(str(path), f["lzf"])
    data = bytearray(path.read_bytes())
    at = int(array.offsets[2])
    data[at : at + 8] = b"\xff" * 8  # a corrupt LZF stream in chunk 2
    path.write_bytes(bytes(data))
    assert array.read(0, 1_000) is not None and array.read(2_000, 3_000) is None
    assert lzf_decompress(b"\x00", 4) is None  # a literal that overruns its input


def test_an_h5ad_block_is_the_same_through_either_reader(tmp_path):
    counts = sp.random(3_000, 800, density=0.1, format="csr", random_state=7, dtype=np.float32)
    counts.data = np.ceil(counts.data * 30)
    path = write_h5ad(tmp_path / "d.h5ad", counts)
    with h5py.File(path, "a") as f:  # rewrite X's arrays lzf-compressed, as scanpy can write them
        for name in ("data", "indices"):
            values = f["X"][name][:]
            del f["X"][name]
            f["X"].create_dataset(name, data=values, chunks=(4_096,), compression="lzf")
    fast, slow = H5adInput(path, InputOptions()), H5adInput(path, InputOptions())
    slow._fast = None  # the h5py path
    ids = fast.gene_ids()
    for a, b in [(0, 3_000), (17, 1_234), (2_999, 3_000)]:
        x, y = fast.read_block(a, b, ids), slow.read_block(a, b, ids)
        for attr in ("data", "indices", "indptr"):
            np.testing.assert_array_equal(getattr(x, attr), getattr(y, attr))
    assert fast._fast is not None  # the chunk path was taken


def test_column_indices_outside_the_matrix_are_refused(tmp_path):
    """A corrupt index would send the compiled kernels out of bounds: one line naming the file."""
    from ingest.errors import IngestError

    path = write_h5ad(tmp_path / "e.h5ad", sp.identity(50, dtype=np.float32, format="csr"))
    with h5py.File(path, "a") as f:
        f["X"]["indices"][10] = 500
    src = H5adInput(path, InputOptions())
    with pytest.raises(IngestError, match=r"e\.h5ad: X rows 0:50 hold column indices outside 0:50"):
        src.read_block(0, 50, src.gene_ids())
