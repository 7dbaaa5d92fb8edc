"""Write h5ad files as a Census-shaped SOMA collection on local disk.

The CELLxGENE Census is a SOMA collection: ``census_info/{summary,datasets}`` and one experiment per
organism under ``census_data`` (measurement ``RNA``, X layer ``raw``, genes keyed by ``var.feature_id``,
a ``feature_dataset_presence_matrix``). This writer lays a corpus out the same way so that the Census
code path (``ingest build --census-version V --census-uri DIR``), the benchmarks and the tests run on
real TileDB-SOMA arrays without network. It streams: counts are copied in row blocks, never loaded whole.

Cells keep the order of the files (joinids follow it); genes are the union of the files' genes in
ascending id order, as in the Census; a gene a file does not have is recorded as unmeasured for that
file's datasets in the presence matrix (absent, not zero).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import scipy.sparse as sp
import tiledbsoma as soma

from .errors import IngestError
from .sources.base import CENSUS_DEFAULT_OBS_COLUMNS
from .sources.h5ad import H5adInput, InputOptions

__all__ = ["CENSUS_OBS_COLUMNS", "CensusCopy", "write_census_copy"]

#: obs columns of a Census experiment that the copy fills (from the h5ad obs, or "unknown")
CENSUS_OBS_COLUMNS = CENSUS_DEFAULT_OBS_COLUMNS


@dataclass(frozen=True)
class CensusCopy:
    root: str
    organism: str
    n_obs: int
    n_var: int
    n_datasets: int


def _obs_table(frames: list[pd.DataFrame]) -> pa.Table:
    obs = pd.concat(frames, ignore_index=True)
    cols: dict[str, pa.Array] = {"soma_joinid": pa.array(np.arange(len(obs), dtype=np.int64))}
    for name in CENSUS_OBS_COLUMNS:
        values = obs[name].astype(str) if name in obs.columns else pd.Series(["unknown"] * len(obs))
        cols[name] = pa.array(values.to_numpy(dtype=object), pa.large_string())
    primary = obs["is_primary_data"] if "is_primary_data" in obs.columns else pd.Series([True] * len(obs))
    cols["is_primary_data"] = pa.array(primary.astype(bool).to_numpy())
    cols["observation_joinid"] = pa.array(obs["observation_joinid"].to_numpy(dtype=object), pa.large_string())
    cols["raw_sum"] = pa.array(obs["raw_sum"].to_numpy(dtype=np.float64))
    cols["nnz"] = pa.array(obs["nnz"].to_numpy(dtype=np.int64))
    return pa.table(cols)


def _frame(coll: soma.Collection, key: str, table: pa.Table) -> None:
    n = len(table)
    df = coll.add_new_dataframe(key, schema=table.schema, domain=[(0, max(n - 1, 0))])
    if n:
        df.write(table)


def write_census_copy(
    inputs: list[Path],
    root: str | Path,
    *,
    version: str = "2025-01-30",
    organism: str = "homo_sapiens",
    block_cells: int = 8_192,
) -> CensusCopy:
    """Write ``inputs`` (h5ad with integer counts in X) as a Census-shaped collection at ``root``.
    Long because it writes one SOMA experiment's objects in the Census's own order and schema (info, datasets,
    obs, var, X, presence); read top to bottom it is the layout."""
    root = str(root)
    if Path(root).exists():
        raise IngestError(f"{root}: already exists; the Census copy is written to a new directory")
    opts = InputOptions()
    sources = [H5adInput(Path(p), opts) for p in inputs]
    try:
        ids = [s.gene_ids() for s in sources]
        names: dict[str, str] = {}
        for s, i in zip(sources, ids, strict=True):
            names.update(zip(i.astype(str), s.gene_names(), strict=True))
        genes = np.unique(np.concatenate([i.astype(str) for i in ids]))
        var = pa.table(
            {
                "soma_joinid": pa.array(np.arange(genes.size, dtype=np.int64)),
                "feature_id": pa.array(genes, pa.large_string()),
                "feature_name": pa.array([names[g] for g in genes], pa.large_string()),
            }
        )
        datasets: list[str] = []
        dataset_genes: dict[str, np.ndarray] = {}
        frames: list[pd.DataFrame] = []
        for s, i in zip(sources, ids, strict=True):
            obs = s.obs.reset_index(drop=True).copy()
            if "dataset_id" not in obs.columns:
                obs["dataset_id"] = s.path.stem
            obs["observation_joinid"] = (s.path.stem + ":" + s.obs.index.astype(str)).to_numpy()
            cols = np.searchsorted(genes, i.astype(str))
            for d in pd.unique(obs["dataset_id"].astype(str)):
                if d not in dataset_genes:
                    datasets.append(d)
                    dataset_genes[d] = cols
            frames.append(obs)

        with soma.Collection.create(root) as census:
            info = census.add_new_collection("census_info")
            summary = pd.DataFrame(
                {
                    "label": [
                        "census_schema_version",
                        "census_build_date",
                        "dataset_schema_version",
                        "total_cell_count",
                        "unique_cell_count",
                    ],
                    "value": ["2.1.0", version, "5.2.0", "0", "0"],
                }
            )
            info_tables = {
                "datasets": pa.table(
                    {
                        "soma_joinid": pa.array(np.arange(len(datasets), dtype=np.int64)),
                        "dataset_id": pa.array(datasets, pa.large_string()),
                        "dataset_title": pa.array([f"synthetic dataset {d[:8]}" for d in datasets], pa.large_string()),
                    }
                )
            }
            data = census.add_new_collection("census_data")
            exp = data.add_new_collection(organism, soma.Experiment)
            ms = exp.add_new_collection("ms")
            rna = ms.add_new_collection("RNA", soma.Measurement)
            _frame(rna, "var", var)
            x = rna.add_new_collection("X")
            n_obs = sum(s.n_obs for s in sources)
            raw = x.add_new_sparse_ndarray("raw", type=pa.float32(), shape=(max(n_obs, 1), max(genes.size, 1)))
            row = 0
            for s, i, obs in zip(sources, ids, frames, strict=True):
                cols = np.searchsorted(genes, i.astype(str))
                raw_sum, nnz = np.zeros(s.n_obs), np.zeros(s.n_obs, dtype=np.int64)
                for a in range(0, s.n_obs, block_cells):
                    b = min(s.n_obs, a + block_cells)
                    csr = s.read_block(a, b, i)
                    csr = sp.csr_matrix((csr.data, cols[csr.indices], csr.indptr), shape=(b - a, genes.size))
                    csr.sort_indices()  # rows in ascending gene order: TileDB's sort then has little to do
                    coo = csr.tocoo()
                    raw_sum[a:b] = np.bincount(coo.row, weights=coo.data, minlength=b - a)
                    nnz[a:b] = np.bincount(coo.row, minlength=b - a)
                    raw.write(
                        pa.table(
                            {
                                "soma_dim_0": pa.array(coo.row.astype(np.int64) + row + a),
                                "soma_dim_1": pa.array(coo.col.astype(np.int64)),
                                "soma_data": pa.array(coo.data.astype(np.float32)),
                            }
                        )
                    )
                obs["raw_sum"], obs["nnz"] = raw_sum, nnz
                row += s.n_obs
            _frame(exp, "obs", _obs_table(frames))
            presence = sp.coo_matrix(
                (
                    np.ones(sum(c.size for c in dataset_genes.values()), dtype=bool),
                    (
                        np.concatenate([np.full(dataset_genes[d].size, k) for k, d in enumerate(datasets)]),
                        np.concatenate([dataset_genes[d] for d in datasets]),
                    ),
                ),
                shape=(len(datasets), genes.size),
            )
            pm = rna.add_new_sparse_ndarray(
                "feature_dataset_presence_matrix", type=pa.bool_(), shape=(max(len(datasets), 1), genes.size)
            )
            pm.write(
                pa.table(
                    {
                        "soma_dim_0": pa.array(presence.row.astype(np.int64)),
                        "soma_dim_1": pa.array(presence.col.astype(np.int64)),
                        "soma_data": pa.array(presence.data),
                    }
                )
            )
            summary.loc[summary.label == "total_cell_count", "value"] = str(n_obs)
            primary = pd.concat(frames)["is_primary_data"] if "is_primary_data" in frames[0] else None
            unique = int(primary.astype(bool).sum()) if primary is not None else n_obs
            summary.loc[summary.label == "unique_cell_count", "value"] = str(unique)
            info_tables["summary"] = pa.table(
                {
                    "soma_joinid": pa.array(np.arange(len(summary), dtype=np.int64)),
                    "label": pa.array(summary["label"].tolist(), pa.large_string()),
                    "value": pa.array(summary["value"].tolist(), pa.large_string()),
                }
            )
            for key, table in info_tables.items():
                _frame(info, key, table)
    finally:
        for s in sources:
            s.close()
    return CensusCopy(root, organism, n_obs, int(genes.size), len(datasets))
