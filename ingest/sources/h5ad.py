"""h5ad inputs read by row blocks, never loaded whole.

Counts come from ``X``, ``layers/NAME`` or ``raw/X`` through anndata's backed sparse datasets (h5py
underneath); ``obs`` and ``var`` are read whole (they are small next to the counts). Every block is
checked: counts must be finite, non-negative integers (float noise below 1e-6 is rounded), and the first
offending value is reported with its file, cell and gene.
"""

from __future__ import annotations

import glob
from dataclasses import dataclass
from pathlib import Path

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import scipy.sparse as sp

from shards.tokens.counts import NEGATIVE, NONFINITE, TOO_LARGE, first_problem, is_integral, round_noise

from ..errors import IngestError
from ..vocab import clean_gene_ids
from .h5chunks import ChunkedArray

__all__ = ["H5adInput", "H5adSpec", "InputOptions", "expand_inputs"]

_UNSET = object()


def expand_inputs(patterns: list[str]) -> list[Path]:
    """Paths and globs in the order given (each glob sorted); duplicates kept once."""
    if not patterns:
        raise IngestError("no input given; pass --input FILE.h5ad (paths or globs)")
    out: list[Path] = []
    for pattern in patterns:
        if glob.has_magic(pattern):
            matches = sorted(glob.glob(pattern, recursive=True))
            if not matches:
                raise IngestError(f"--input {pattern!r}: the glob matches no file")
            paths = [Path(m) for m in matches]
        else:
            paths = [Path(pattern)]
        for p in paths:
            if not p.is_file():
                raise IngestError(f"{p}: input file does not exist")
            if p not in out:
                out.append(p)
    return out


@dataclass(frozen=True)
class InputOptions:
    layer: str | None = None
    use_raw: bool = False
    gene_id_column: str | None = None


class H5adInput:
    """One open h5ad file: its genes, cell metadata and a block reader for its counts."""

    def __init__(self, path: Path, options: InputOptions) -> None:
        self.path = Path(path)
        self.options = options
        try:
            self._file = h5py.File(self.path, "r")
        except OSError as exc:
            raise IngestError(
                f"{self.path}: not a readable h5ad/HDF5 file ({exc}); is it truncated or still downloading?"
            ) from exc
        try:
            self._elem, self.matrix_name = self._locate_counts()
            self._fast: tuple | object | None = _UNSET
            self.var = self._read_frame(self._var_key())
            self.obs = self._read_frame("obs")
        except IngestError:
            self._file.close()
            raise
        self.n_obs, self.n_vars = self._shape()
        if self.n_obs != len(self.obs) or self.n_vars != len(self.var):
            self._file.close()
            raise IngestError(
                f"{self.path}: {self.matrix_name} is {self.n_obs}x{self.n_vars} but obs/var have "
                f"{len(self.obs)}/{len(self.var)} rows; the file is inconsistent"
            )

    # -- structure -------------------------------------------------------------------------------
    def _locate_counts(self) -> tuple[object, str]:
        f, opt = self._file, self.options
        if opt.layer and opt.use_raw:
            raise IngestError("--layer and --use-raw are exclusive; choose where the counts are")
        if opt.use_raw:
            if "raw" not in f or "X" not in f["raw"]:
                raise IngestError(f"{self.path}: --use-raw given but the file has no raw.X")
            key = "raw/X"
        elif opt.layer:
            layers = list(f["layers"].keys()) if "layers" in f else []
            if opt.layer not in layers:
                raise IngestError(f"{self.path}: --layer {opt.layer!r} does not exist (layers: {layers})")
            key = f"layers/{opt.layer}"
        else:
            if "X" not in f:
                raise IngestError(f"{self.path}: the file has no X matrix")
            key = "X"
        return self._open_matrix(key), key

    def _open_matrix(self, key: str) -> object:
        node = self._file[key]
        if isinstance(node, h5py.Dataset):
            return node
        try:
            return ad.io.sparse_dataset(node)
        except Exception as exc:
            raise IngestError(f"{self.path}: cannot read {key} as a sparse matrix ({exc})") from exc

    def _var_key(self) -> str:
        return "raw/var" if self.options.use_raw else "var"

    def _read_frame(self, key: str) -> pd.DataFrame:
        try:
            return ad.io.read_elem(self._file[key])
        except KeyError:
            raise IngestError(f"{self.path}: the file has no {key} table") from None
        except Exception as exc:
            raise IngestError(f"{self.path}: cannot read {key} ({exc}); the file may be truncated") from exc

    def _shape(self) -> tuple[int, int]:
        shape = self._elem.shape
        return int(shape[0]), int(shape[1])

    def close(self) -> None:
        self._file.close()

    # -- genes -----------------------------------------------------------------------------------
    def gene_id_source(self) -> str:
        col = self.options.gene_id_column
        if col:
            if col not in self.var.columns:
                raise IngestError(
                    f"{self.path}: --gene-id-column {col!r} is not a column of {self._var_key()} "
                    f"(columns: {list(self.var.columns)})"
                )
            return col
        return "feature_id" if "feature_id" in self.var.columns else "var.index"

    def gene_ids(self) -> np.ndarray:
        """Gene ids per column (object array); missing ones as None."""
        src = self.gene_id_source()
        values = self.var.index.to_series() if src == "var.index" else self.var[src]
        return clean_gene_ids(values.to_numpy(), str(self.path), src)

    def gene_names(self) -> np.ndarray:
        for col in ("feature_name", "gene_symbols", "gene_name"):
            if col in self.var.columns:
                return self.var[col].astype(str).to_numpy()
        return np.full(self.n_vars, "", dtype=object)

    # -- counts ----------------------------------------------------------------------------------
    def read_block(self, start: int, stop: int, gene_ids: np.ndarray, validate: bool = True) -> sp.csr_matrix:
        """Rows ``start:stop`` as a CSR of integer counts (validated unless already checked)."""
        csr = self._read_chunked(start, stop)
        if csr is None:
            try:
                block = self._elem[start:stop]
            except Exception as exc:
                raise IngestError(
                    f"{self.path}: reading {self.matrix_name} rows {start}:{stop} failed ({exc}); "
                    "the file may be truncated or corrupt"
                ) from exc
            csr = block if sp.isspmatrix_csr(block) else sp.csr_matrix(block)
        if csr.nnz and (csr.indices.min() < 0 or csr.indices.max() >= self.n_vars):
            raise IngestError(
                f"{self.path}: {self.matrix_name} rows {start}:{stop} hold column indices outside 0:{self.n_vars}; "
                "the file is corrupt"
            )
        kind, flat, noisy = first_problem(csr)
        if validate and kind:
            self._fail(csr, kind, flat, start, gene_ids)
        if noisy:  # float noise below the tolerance: round it away
            round_noise(csr)
        return csr

    def _chunked(self) -> tuple[ChunkedArray, ChunkedArray, np.ndarray] | None:
        """A CSR matrix's ``data`` and ``indices`` by their chunk index (``h5chunks``), and its indptr."""
        if self._fast is _UNSET:
            self._fast = None
            node = self._file[self.matrix_name]
            if isinstance(node, h5py.Group) and node.attrs.get("encoding-type") == "csr_matrix":
                data = ChunkedArray.open(str(self.path), node["data"])
                indices = ChunkedArray.open(str(self.path), node["indices"])
                if data is not None and indices is not None:
                    self._fast = (data, indices, node["indptr"][:])
        return self._fast

    def _read_chunked(self, start: int, stop: int) -> sp.csr_matrix | None:
        fast = self._chunked()
        if fast is None:
            return None
        data_array, indices_array, indptr = fast
        lo, hi = int(indptr[start]), int(indptr[stop])
        data, indices = data_array.read(lo, hi), indices_array.read(lo, hi)
        if data is None or indices is None:
            return None  # a chunk this reader does not decode: h5py reads the block
        return sp.csr_matrix((data, indices, indptr[start : stop + 1] - lo), shape=(stop - start, self.n_vars))

    def _where(self, csr: sp.csr_matrix, flat: int, start: int, gene_ids: np.ndarray) -> str:
        row = int(np.searchsorted(csr.indptr, flat, side="right") - 1)
        gene = gene_ids[csr.indices[flat]]
        return f"cell {self.obs.index[start + row]!r} (row {start + row}), gene {gene}"

    def _fail(self, csr: sp.csr_matrix, kind: int, flat: int, start: int, gene_ids: np.ndarray) -> None:
        at = self._where(csr, flat, start, gene_ids)
        value = float(csr.data[flat])
        m = self.matrix_name
        if kind == NONFINITE:
            raise IngestError(f"{self.path}: {m} holds NaN or infinite values, first at {at}")
        if kind == NEGATIVE:
            raise IngestError(
                f"{self.path}: {m} holds negative values ({value:g} at {at}); it looks scaled or centred, and "
                f"cellshard needs raw counts. {self._raw_hint()}"
            )
        if kind == TOO_LARGE:
            raise IngestError(f"{self.path}: {m} has a count beyond the int32 range ({value:g} at {at})")
        raise IngestError(
            f"{self.path}: {m} is not integer counts ({value:g} at {at}); it looks normalized or "
            f"log-transformed. {self._raw_hint()}"
        )

    def _raw_hint(self) -> str:
        """Where integer counts are in this file (a layer or raw.X not in use), else what to do."""
        places = ["X", *[f"layers/{n}" for n in (self._file["layers"].keys() if "layers" in self._file else [])]]
        if "raw" in self._file and "X" in self._file["raw"]:
            places.append("raw/X")
        for key in places:
            if key == self.matrix_name:
                continue
            matrix = self._open_matrix(key)
            sample = sp.csr_matrix(matrix[0 : min(256, matrix.shape[0])], dtype=np.float64)
            if sample.nnz and is_integral(sample.data):
                flag = {"raw/X": "--use-raw", "X": "neither --layer nor --use-raw"}.get(key)
                flag = flag or f"--layer {key.split('/', 1)[1]}"
                return f"{key} holds integer counts: rerun with {flag}."
        tried = ", ".join([self.matrix_name, *[k for k in places if k != self.matrix_name]])
        return (
            f"No matrix of this file holds integer counts ({tried} checked): cellshard tokenizes raw counts, "
            "so export the counts your pipeline started from (e.g. the 10x matrix) into X or a layer."
        )

    def iter_blocks(self, start: int, stop: int, size: int, gene_ids: np.ndarray, validate: bool = True):
        """``(a, b, csr)`` for consecutive row blocks of ``start:stop``."""
        for a in range(start, stop, size):
            b = min(stop, a + size)
            yield a, b, self.read_block(a, b, gene_ids, validate)

    # -- metadata --------------------------------------------------------------------------------
    def obs_column(self, name: str) -> pd.Series | None:
        return self.obs[name] if name in self.obs.columns else None

    @property
    def default_dataset_id(self) -> str:
        """The dataset of cells whose obs has no ``dataset_id``: the file's stem."""
        return self.path.stem

    def obs_frame(self, start: int, stop: int, columns: list[str]) -> pd.DataFrame:
        """Rows ``start:stop``: ``cell_id`` (``<file stem>:<obs_name>``) and those of ``columns`` that exist."""
        obs = self.obs.iloc[start:stop]
        frame = pd.DataFrame({"cell_id": (self.path.stem + ":" + obs.index.astype(str)).to_numpy()})
        for name in columns:
            if name in obs.columns and name not in frame.columns:
                frame[name] = obs[name].to_numpy()
        return frame


@dataclass(frozen=True)
class H5adSpec:
    path: str
    options: InputOptions

    """What a process needs to read an h5ad input (picklable; the file is opened in each process)."""

    def open(self) -> H5adInput:
        return H5adInput(Path(self.path), self.options)
