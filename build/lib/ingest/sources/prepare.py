"""Preparing the source of a build — h5ad files, the Census, any SOMA experiment — for one pipeline.

Whatever the source, a build sees a list of inputs, each with a row count, a gene id per column and a
picklable ``spec`` whose ``open()`` gives a reader with ``iter_blocks`` (row blocks of integer counts as
CSR) and ``obs_frame`` (``cell_id`` plus metadata columns). Vocabulary, medians, split, tokenization,
shuffle and writing are then the same code for all of them. Preparation checks everything a user can
get wrong (URIs, versions, organisms, filters, columns) before anything is written.
"""

from __future__ import annotations

import numpy as np

from ..checks import check_split, check_stable_ids
from .base import Prepared, PreparedInput, check_columns
from .h5ad import H5adInput, H5adSpec, InputOptions, expand_inputs

__all__ = ["prepare_h5ad", "prepare_source", "with_split_column"]


def with_split_column(columns: list[str], split_by: str, val_fraction: float) -> list[str]:
    """The obs columns to store, with the split column added when the set is split by a column that the
    record's metadata does not already carry: a report holds out the same groups (``--group-by``)."""
    from shards.format.records import METADATA_COLUMNS

    keep = val_fraction > 0 and split_by not in ("cell", *METADATA_COLUMNS) and split_by not in columns
    return [*columns, split_by] if keep else columns


def prepare_h5ad(opts, work_params: dict | None = None) -> Prepared:
    """h5ad files: each input checked (gene ids, columns), the split checked on every cell's key."""
    from shards.storage.atomic import sha256_file

    in_opts = InputOptions(opts.layer, opts.use_raw, opts.gene_id_column)
    columns = with_split_column(list(opts.obs_columns or []), opts.split_by, opts.val_fraction)
    inputs, keys = [], []
    for p in expand_inputs(opts.input):
        src = H5adInput(p, in_opts)
        try:
            ids = src.gene_ids()
            check_stable_ids(ids, str(p), src.gene_id_source(), opts.allow_non_ensembl_ids, src.var)
            check_columns(columns, list(src.obs.columns), str(p), opts.split_by, opts.val_fraction)
            if opts.val_fraction > 0:
                keys.append(_split_keys(src, opts.split_by))
            record = {
                "path": str(p),
                "sha256": sha256_file(p),
                "bytes": p.stat().st_size,
                "n_obs": src.n_obs,
                "gene_id_source": src.gene_id_source(),
            }
            inputs.append(
                PreparedInput(
                    H5adSpec(str(p), in_opts), str(p), src.n_obs, ids, src.gene_names(), src.gene_id_source(), record
                )
            )
        finally:
            src.close()
    split = None
    if opts.val_fraction > 0:
        where = str(inputs[0].label) if len(inputs) == 1 else f"{len(inputs)} input files"
        split = check_split(keys, opts.seed, opts.val_fraction, opts.split_by, where)
    source = {"kind": "h5ad", "layer": opts.layer, "use_raw": opts.use_raw, "gene_id_column": opts.gene_id_column}
    identity = {"inputs": [i.record["sha256"] for i in inputs]}
    return Prepared("h5ad", inputs, source, identity, columns, split=split)


def _split_keys(src: H5adInput, split_by: str) -> np.ndarray:
    """The split key of every row, as the build's first pass computes it."""
    if split_by == "cell":
        return (src.path.stem + ":" + src.obs.index.astype(str)).to_numpy()
    if split_by not in src.obs.columns:  # dataset_id: the file
        return np.full(src.n_obs, src.default_dataset_id, dtype=object)
    return src.obs[split_by].astype(str).to_numpy()


def prepare_source(opts, work_params: dict | None = None) -> Prepared:
    """Open and check the source that ``opts`` names (``registry.SOURCES``); ``work_params`` are those of
    an interrupted build."""
    from .registry import source_of

    return source_of(opts).prepare(opts, work_params)
