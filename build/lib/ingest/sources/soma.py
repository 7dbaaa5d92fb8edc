"""SOMA experiments (the CELLxGENE Census, or any TileDB-SOMA experiment) as an ingest source.

The main process scans the obs filter once, writing the matched ``soma_joinid``s in ascending order to a
flat int64 file (8 bytes a cell, never held in memory), and reads ``var`` whole (genes number tens of
thousands). A work unit is then a range of positions in that file: each process, spawned workers
included, opens the experiment itself (TileDB is not fork-safe) at the snapshot timestamp of the build,
and reads its rows with ``X.read(coords=(joinids, var joinids)).blockwise(axis=0, size=N).scipy()``:
memory per process is bounded by the block size and ``soma.init_buffer_bytes``, whatever the corpus size.

Long because it is the SOMA source's whole read path: the experiment snapshot, the obs scan, var filtering,
the compiled COO-to-CSR block kernel and the per-process reader."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np
import pandas as pd
import pyarrow as pa
import scipy.sparse as sp
import tiledbsoma as soma

from shards.jit import kernel
from shards.tokens.counts import NEGATIVE, NONFINITE, TOO_LARGE, first_problem, round_noise

from ..errors import IngestError

__all__ = [
    "SomaInput",
    "SomaSpec",
    "close_experiments",
    "open_experiment",
    "read_ahead",
    "read_var",
    "scan_obs",
    "soma_target",
]

T = TypeVar("T")
_END = object()
_OPEN: dict[tuple, soma.Experiment] = {}  # per process: experiments opened by workers, reused across units


def open_experiment(uri: str, tiledb_config: dict, timestamp_ms: int) -> soma.Experiment:
    """The experiment at ``uri`` as of ``timestamp_ms``, opened once per process and thread."""
    # one handle per thread too: units may run on threads (--threads), and SOMA handles are not shared
    key = (uri, tuple(sorted((k, str(v)) for k, v in tiledb_config.items())), timestamp_ms, threading.get_ident())
    exp = _OPEN.get(key)
    if exp is None or exp.closed:
        context = soma.SOMATileDBContext(tiledb_config=dict(tiledb_config))
        exp = soma.Experiment.open(uri, context=context, tiledb_timestamp=timestamp_ms)
        _OPEN[key] = exp
    return exp


def read_ahead(iterator: Iterator[T]) -> Iterator[T]:
    """Items of ``iterator``, the next one computed in a background thread while the caller works."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="soma-read-ahead") as pool:
        pending = pool.submit(next, iterator, _END)
        while True:
            item = pending.result()
            if item is _END:
                return
            pending = pool.submit(next, iterator, _END)
            yield item


@kernel(nogil=True)
def _coo_to_csr(dim0, dim1, data, ids, col_of):  # pragma: no cover - compiled
    """CSR ``(indptr, indices, values, -1)`` of COO entries in any order whose rows are the (ascending)
    joinids ``ids``; ``-1`` becomes the index of the first entry outside ``ids`` / ``col_of``, or of a
    duplicate, when there is one. A counting sort by row, then each row sorted by column (insertion
    sort: TileDB returns a row's entries in a few sorted runs, usually one)."""
    n, m = ids.size, dim0.size
    contiguous = n > 0 and ids[n - 1] - ids[0] + 1 == n
    rows = np.empty(m, dtype=np.int64)
    indptr = np.zeros(n + 1, dtype=np.int64)
    indices = np.empty(m, dtype=np.int32)
    values = np.empty(m, dtype=data.dtype)
    for k in range(m):
        row = dim0[k]
        r = row - ids[0] if contiguous else np.searchsorted(ids, row)
        if r < 0 or r >= n or ids[r] != row or dim1[k] < 0 or dim1[k] >= col_of.size or col_of[dim1[k]] < 0:
            return indptr, indices, values, k
        rows[k] = r
        indptr[r + 1] += 1
    for i in range(n):
        indptr[i + 1] += indptr[i]
    fill = indptr[:-1].copy()
    for k in range(m):
        at = fill[rows[k]]
        indices[at] = col_of[dim1[k]]
        values[at] = data[k]
        fill[rows[k]] = at + 1
    for i in range(n):
        for a in range(indptr[i] + 1, indptr[i + 1]):
            c, v = indices[a], values[a]
            b = a - 1
            while b >= indptr[i] and indices[b] > c:
                indices[b + 1], values[b + 1] = indices[b], values[b]
                b -= 1
            indices[b + 1], values[b + 1] = c, v
            if b >= indptr[i] and indices[b] == c:
                return indptr, indices, values, a
    return indptr, indices, values, -1


def close_experiments() -> None:
    while _OPEN:
        _, exp = _OPEN.popitem()
        exp.close()


def _soma_error(what: str, exc: Exception) -> str:
    return str(exc).replace("SOMAError: ", "").split("\n")[0].strip().strip("'") or f"{what} failed"


def scan_obs(exp: soma.Experiment, obs_filter: str | None, out: Path, uri_label: str) -> tuple[int, str]:
    """Write the joinids matching ``obs_filter`` (ascending) to ``out``; ``(count, sha256 of the bytes)``."""
    try:
        reader = exp.obs.read(value_filter=obs_filter, column_names=["soma_joinid"], result_order="row-major")
        digest, n, last = hashlib.sha256(), 0, -1
        with open(out, "wb") as fh:
            for table in reader:
                ids = table.column("soma_joinid").to_numpy().astype(np.int64, copy=False)
                if ids.size == 0:
                    continue
                if ids[0] <= last or (ids.size > 1 and np.any(np.diff(ids) <= 0)):
                    raise IngestError(f"{uri_label}: obs joinids are not returned in ascending order")
                last = int(ids[-1])
                buf = ids.tobytes()
                fh.write(buf)
                digest.update(buf)
                n += ids.size
    except soma.SOMAError as exc:
        raise IngestError(
            f"--obs-filter {obs_filter!r}: {_soma_error('the filter', exc)} (obs columns: "
            f"{', '.join(exp.obs.schema.names)})"
        ) from None
    return n, digest.hexdigest()


def read_var(exp: soma.Experiment, measurement: str, var_filter: str | None, uri_label: str) -> pd.DataFrame:
    """``var`` of ``measurement`` in joinid order, with a boolean column ``selected`` for ``var_filter``."""
    ms = exp.ms[measurement]
    try:
        var = ms.var.read(result_order="row-major").concat().to_pandas()
    except Exception as exc:
        raise IngestError(f"{uri_label}: cannot read var of measurement {measurement!r} ({exc})") from exc
    if var_filter:
        try:
            chosen = ms.var.read(value_filter=var_filter, column_names=["soma_joinid"]).concat()
        except soma.SOMAError as exc:
            raise IngestError(
                f"--var-filter {var_filter!r}: {_soma_error('the filter', exc)} (var columns: "
                f"{', '.join(ms.var.schema.names)})"
            ) from None
        var["selected"] = np.isin(var["soma_joinid"].to_numpy(), chosen.column("soma_joinid").to_numpy())
        if not var["selected"].any():
            raise IngestError(f"--var-filter {var_filter!r} matches no gene of {uri_label}")
    else:
        var["selected"] = True
    return var


@dataclass(frozen=True)
class SomaSpec:
    """What a process needs to read rows of the matched cells (picklable; opened in each process)."""

    uri: str  # of the experiment
    tiledb_config: dict
    timestamp_ms: int
    measurement: str
    x_layer: str
    joinids_path: str
    n_obs: int
    var_joinids: np.ndarray = field(repr=False)
    cell_id_prefix: str  # "census:<version>:" or "<experiment name>:"
    organism: str | None  # value of the organism column when obs has none
    dataset_default: str

    def open(self) -> SomaInput:
        return SomaInput(self)


class SomaInput:
    """Block reader over the matched cells of an experiment; rows are positions in the joinid file."""

    def __init__(self, spec: SomaSpec) -> None:
        self.spec = spec
        self.n_obs = spec.n_obs
        self.default_dataset_id = spec.dataset_default
        self._exp = open_experiment(spec.uri, spec.tiledb_config, spec.timestamp_ms)
        self._joinids = np.memmap(spec.joinids_path, dtype=np.int64, mode="r") if spec.n_obs else np.empty(0, np.int64)
        try:
            self._x = self._exp.ms[spec.measurement].X[spec.x_layer]
        except KeyError:
            raise IngestError(f"{spec.uri}: measurement {spec.measurement!r} has no X layer {spec.x_layer!r}") from None

    def close(self) -> None:
        """Nothing to release per unit: the experiment stays open for the process's next unit."""

    def cell_ids(self, start: int, stop: int) -> np.ndarray:
        return (self.spec.cell_id_prefix + pd.Series(self._joinids[start:stop]).astype(str)).to_numpy()

    def iter_blocks(self, start: int, stop: int, size: int, gene_ids: np.ndarray, validate: bool = True):
        """``(a, b, csr)`` for consecutive row blocks of ``start:stop``; columns follow ``var_joinids``.

        A block is read as TileDB's COO tables, in whatever order TileDB returns them, and turned into
        CSR by one compiled pass (``_coo_to_csr``): measured on 8,192 Census-shaped cells of ~1,800
        genes, ~62 us a cell for the read, against ~200-400 for TileDB-SOMA's ``blockwise(...).scipy()``
        with its re-indexing and ~965 for a row-major read. The next block is read in a background
        thread while the caller works on this one.
        """
        try:
            a = start
            for b, csr in read_ahead(self._blocks(start, stop, size)):
                csr = csr if csr.has_canonical_format else sp.csr_matrix(csr)
                self._check(csr, a, gene_ids, validate)
                yield a, b, csr
                a = b
        except soma.SOMAError as exc:
            raise IngestError(
                f"{self.spec.uri}: reading X[{self.spec.x_layer!r}] rows {start}:{stop} failed ({exc})"
            ) from exc
        if a != stop:
            raise IngestError(f"{self.spec.uri}: X[{self.spec.x_layer!r}] returned {a - start} of {stop - start} rows")

    def _blocks(self, start: int, stop: int, size: int) -> Iterator[tuple[int, sp.csr_matrix]]:
        col_of = self._columns()
        for a in range(start, stop, size):
            b = min(stop, a + size)
            ids = np.ascontiguousarray(self._joinids[a:b])
            # a contiguous run of joinids is read as one range (SOMA slices are closed): ~30% faster here
            # than the same rows as a list of points
            rows = slice(int(ids[0]), int(ids[-1])) if ids[-1] - ids[0] + 1 == ids.size else ids
            # unordered: TileDB's row-major order costs ~15x the read itself here (965 against 62 us a cell)
            table = self._x.read(coords=(rows,), result_order="auto").tables().concat()
            dim0 = table.column("soma_dim_0").to_numpy()
            dim1 = table.column("soma_dim_1").to_numpy()
            data = table.column("soma_data").to_numpy()
            indptr, indices, values, bad = _coo_to_csr(dim0, dim1, data, ids, col_of)
            if bad >= 0:
                raise IngestError(
                    f"{self.spec.uri}: X[{self.spec.x_layer!r}] entry ({dim0[bad]}, {dim1[bad]}) is outside the "
                    f"rows asked for or the var of the experiment, or is stored twice; the array is corrupt"
                )
            yield b, sp.csr_matrix((values, indices, indptr), shape=(b - a, self.spec.var_joinids.size))

    def _columns(self) -> np.ndarray:
        """Column of each var joinid (positions in ``var_joinids``), -1 for none."""
        var = self.spec.var_joinids
        col_of = np.full(int(var.max(initial=-1)) + 1, -1, dtype=np.int64)
        col_of[var] = np.arange(var.size)
        return col_of

    def _check(self, csr: sp.csr_matrix, a: int, gene_ids: np.ndarray, validate: bool) -> None:
        kind, flat, noisy = first_problem(csr)
        if validate and kind:
            row = int(np.searchsorted(csr.indptr, flat, side="right") - 1)
            cell = self.cell_ids(a + row, a + row + 1)[0]
            at = f"cell {cell}, gene {gene_ids[csr.indices[flat]]}"
            layer, value = f"X[{self.spec.x_layer!r}]", float(csr.data[flat])
            if kind == NONFINITE:
                problem = "holds NaN or infinite values"
            elif kind == NEGATIVE:
                problem = f"holds negative values ({value:g})"
            elif kind == TOO_LARGE:
                problem = f"has a count beyond the int32 range ({value:g})"
            else:
                problem = f"is not integer counts ({value:g}); choose the raw-count layer with --x-layer"
            raise IngestError(f"{self.spec.uri}: {layer} {problem}, first at {at}")
        if noisy:
            round_noise(csr)

    def obs_frame(self, start: int, stop: int, columns: list[str]) -> pd.DataFrame:
        """Rows ``start:stop``: ``cell_id`` and those of ``columns`` that exist (organism filled in)."""
        frame = pd.DataFrame({"cell_id": self.cell_ids(start, stop)})
        names = set(self._exp.obs.schema.names)
        wanted = [c for c in dict.fromkeys(columns) if c in names and c != "soma_joinid"]
        if wanted and stop > start:
            ids = np.asarray(self._joinids[start:stop])
            table = self._exp.obs.read(
                coords=(ids,), column_names=["soma_joinid", *wanted], result_order="row-major"
            ).concat()
            if not np.array_equal(table.column("soma_joinid").to_numpy(), ids):
                raise IngestError(f"{self.spec.uri}: obs rows for joinids {ids[0]}..{ids[-1]} are incomplete")
            for name in wanted:
                col = table.column(name)
                if pa.types.is_dictionary(col.type):
                    col = col.cast(col.type.value_type)
                frame[name] = col.to_numpy(zero_copy_only=False)
        if "organism" in columns and "organism" not in frame.columns and self.spec.organism:
            frame["organism"] = self.spec.organism
        return frame


def soma_target(opts, config: dict):
    """The experiment at ``--soma-uri``: it must open as a SOMA Experiment (a Census copy is a
    Collection: the error says to use ``--census-uri``)."""
    from .experiment import ExperimentTarget

    try:
        obj = soma.open(opts.soma_uri, context=soma.SOMATileDBContext(tiledb_config=config))
    except soma.SOMAError as exc:
        raise IngestError(f"--soma-uri {opts.soma_uri}: not a SOMA object ({str(exc).splitlines()[0]})") from None
    kind = type(obj).__name__
    exp_uri = obj.uri
    obj.close()
    if kind != "Experiment":
        hint = " (for a Census copy use --census-uri)" if kind == "Collection" else ""
        raise IngestError(f"--soma-uri {opts.soma_uri}: a SOMA {kind}, not an Experiment{hint}")
    name = Path(exp_uri.rstrip("/")).name
    return ExperimentTarget(
        kind="soma",
        uri=exp_uri,
        label=opts.soma_uri,
        config=config,
        record={"uri": exp_uri},
        cell_id_prefix=f"{name}:",
        dataset_default=name,
    )
