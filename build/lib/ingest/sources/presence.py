"""``presence.parquet``: which genes each dataset measured, from the Census presence matrix.

In the Census a zero in X means "measured, not detected" only for genes the cell's dataset measured;
``feature_dataset_presence_matrix`` (datasets × genes) says which. A model that masks or scores
unmeasured genes as zeros learns the panels rather than the biology, so the build keeps this matrix
beside the shards as a long table restricted to the shard set's datasets and vocabulary:
``dataset_joinid, dataset_id, gene_id, token``, sorted, one row per measured (dataset, gene) pair.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from shards.storage.atomic import atomic_file, sha256_file

from .soma import open_experiment

__all__ = ["PRESENCE_NAME", "write_presence"]

PRESENCE_NAME = "presence.parquet"


def _dataset_ids(info: dict) -> dict[int, str]:
    uri = info.get("datasets_uri")
    if not uri:
        return {}
    import tiledbsoma as soma

    with soma.DataFrame.open(uri, context=soma.SOMATileDBContext(tiledb_config=dict(info["config"]))) as df:
        table = df.read(column_names=["soma_joinid", "dataset_id"]).concat()
    return dict(zip(table["soma_joinid"].to_pylist(), table["dataset_id"].to_pylist(), strict=True))


def write_presence(info: dict, gene_ids: np.ndarray, token_of: dict[str, int], datasets: set[str], path: Path) -> dict:
    """Write the table for the datasets in ``datasets`` (all of them when names are unknown)."""
    exp = open_experiment(info["uri"], info["config"], info["timestamp_ms"])
    var_joinids = np.asarray(info["var_joinids"], dtype=np.int64)
    # token of each var position (-1: not in the vocabulary, or left out)
    col_token = np.array([token_of.get(g, -1) if g is not None else -1 for g in gene_ids], dtype=np.int64)
    names = _dataset_ids(info)
    matrix = exp.ms[info["measurement"]]["feature_dataset_presence_matrix"]
    rows, tokens = [], []
    for table in matrix.read().tables():
        d = table["soma_dim_0"].to_numpy()
        g = table["soma_dim_1"].to_numpy()
        present = table["soma_data"].to_numpy(zero_copy_only=False).astype(bool)
        pos = np.searchsorted(var_joinids, g)
        pos = np.minimum(pos, var_joinids.size - 1)
        ok = present & (var_joinids[pos] == g)
        tok = np.where(ok, col_token[pos], -1)
        keep = tok >= 0
        rows.append(d[keep])
        tokens.append(tok[keep])
    d = np.concatenate(rows) if rows else np.empty(0, np.int64)
    t = np.concatenate(tokens) if tokens else np.empty(0, np.int64)
    if names:
        wanted = np.array([names.get(int(j)) in datasets for j in np.unique(d)], dtype=bool)
        keep_ids = np.unique(d)[wanted]
        sel = np.isin(d, keep_ids)
        d, t = d[sel], t[sel]
    order = np.lexsort((t, d))
    d, t = d[order], t[order]
    id_of_token = {tok: gid for gid, tok in token_of.items()}
    uniq_t, inv_t = np.unique(t, return_inverse=True)
    uniq_d, inv_d = np.unique(d, return_inverse=True)
    labels = [names.get(int(j)) or "" for j in uniq_d]
    unnamed = np.array([int(j) not in names for j in uniq_d], dtype=bool)
    table = pa.table(
        {
            "dataset_joinid": pa.array(d, pa.int64()),
            "dataset_id": pa.DictionaryArray.from_arrays(  # null where the source names no dataset
                pa.array(inv_d.astype(np.int32), mask=unnamed[inv_d]), pa.array(labels, pa.string())
            ),
            "gene_id": pa.DictionaryArray.from_arrays(
                pa.array(inv_t.astype(np.int32)), pa.array([id_of_token[int(x)] for x in uniq_t], pa.string())
            ),
            "token": pa.array(t.astype(np.int32)),
        }
    )
    with atomic_file(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")
    return {
        "file": path.name,
        "sha256": sha256_file(path),
        "n_pairs": len(table),
        "n_datasets": int(uniq_d.size),
        "source": f"{info['measurement']}/feature_dataset_presence_matrix",
    }
