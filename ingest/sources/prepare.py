"""Preparing the source of a build — h5ad files, the Census, any SOMA experiment — for one pipeline.

Whatever the source, a build sees a list of inputs, each with a row count, a gene id per column and a
picklable ``spec`` whose ``open()`` gives a reader with ``iter_blocks`` (row blocks of integer counts as
CSR) and ``obs_frame`` (``cell_id`` plus metadata columns). Vocabulary, medians, split, tokenization,
shuffle and writing are then the same code for all of them. Preparation checks everything a user can
get wrong (URIs, versions, organisms, filters, columns) before anything is written.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd

from shards.storage.remote import redact

from ..checks import check_split, check_stable_ids
from ..errors import IngestError
from ..vocab import clean_gene_ids
from .base import CENSUS_DEFAULT_OBS_COLUMNS, JOINIDS_NAME, Prepared, PreparedInput, check_columns
from .h5ad import H5adInput, H5adSpec, InputOptions, expand_inputs

__all__ = ["prepare_source"]


def with_split_column(columns: list[str], split_by: str, val_fraction: float) -> list[str]:
    """The obs columns to store, with the split column added when the set is split by a column that the
    record's metadata does not already carry: a report holds out the same groups (``--group-by``)."""
    from shards.format.records import METADATA_COLUMNS

    keep = val_fraction > 0 and split_by not in ("cell", *METADATA_COLUMNS) and split_by not in columns
    return [*columns, split_by] if keep else columns


def _prepare_h5ad(opts) -> Prepared:
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


def _soma_gene_ids(var: pd.DataFrame, column: str, label: str) -> np.ndarray:
    if column not in var.columns:
        raise IngestError(f"{label}: --gene-id-column {column!r} is not a var column (columns: {list(var.columns)})")
    return clean_gene_ids(var[column].to_numpy(), label, f"var.{column}", " (in the Census: feature_id)")


def _prepare_soma(opts, work_params: dict | None) -> Prepared:
    import tempfile

    import tiledbsoma as soma

    from .census import normalize_organism, open_census
    from .soma import SomaSpec, open_experiment, read_var, scan_obs

    config = {
        "soma.init_buffer_bytes": int(opts.soma_buffer_bytes),
        "py.init_buffer_bytes": int(opts.soma_buffer_bytes),
        **opts.tiledb_settings(),
    }
    census = opts.census_version is not None or opts.census_uri is not None
    timestamp = int((work_params or {}).get("soma_timestamp_ms") or time.time() * 1000)
    if census:
        organism = normalize_organism(opts.organism)
        root, record = open_census(opts.census_version, opts.census_uri, config, opts.census_timeout)
        try:
            organisms = sorted(root["census_data"].keys())
            if organism not in organisms:
                raise IngestError(f"--organism {opts.organism!r}: the Census has {', '.join(organisms)}")
            exp_uri = root["census_data"][organism].uri
            config = dict(root.context.tiledb_config)
            info = root["census_info"] if "census_info" in root else {}
            datasets_uri = info["datasets"].uri if "datasets" in info else None
        finally:
            root.close()
        label = record["uri"]
        prefix = f"census:{record['resolved_version']}:"  # the release date: an alias moves
        organism_label = organism.replace("_", " ").capitalize()
        dataset_default = organism
    else:
        label = opts.soma_uri
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
        record = {"uri": exp_uri}
        datasets_uri = None
        organism = None
        prefix = f"{Path(exp_uri.rstrip('/')).name}:"
        organism_label = None
        dataset_default = Path(exp_uri.rstrip("/")).name
    exp = open_experiment(exp_uri, config, timestamp)
    if opts.measurement not in exp.ms:
        raise IngestError(f"{label}: no measurement {opts.measurement!r} (measurements: {', '.join(exp.ms.keys())})")
    layers = list(exp.ms[opts.measurement].X.keys())
    if opts.x_layer not in layers:
        raise IngestError(
            f"{label}: measurement {opts.measurement!r} has no X layer {opts.x_layer!r} (layers: {layers})"
        )
    columns = list(CENSUS_DEFAULT_OBS_COLUMNS if opts.obs_columns is None and census else opts.obs_columns or [])
    columns = with_split_column(columns, opts.split_by, opts.val_fraction)
    obs_names = [c for c in exp.obs.schema.names if c != "soma_joinid"]
    check_columns(columns, obs_names, label, opts.split_by, opts.val_fraction)
    var = read_var(exp, opts.measurement, opts.var_filter, label)
    id_column = opts.gene_id_column or "feature_id"
    ids = _soma_gene_ids(var, id_column, label)
    check_stable_ids(ids, label, f"var.{id_column}", opts.allow_non_ensembl_ids, var)
    excluded = int((~var["selected"].to_numpy()).sum())
    ids[~var["selected"].to_numpy()] = None
    names = var["feature_name"].astype(str).to_numpy() if "feature_name" in var.columns else np.full(len(var), "")
    fd, tmp = tempfile.mkstemp(prefix="cellshard-joinids-", suffix=".i64")  # moved into the work dir later
    os.close(fd)
    try:
        n, joinids_sha = scan_obs(exp, opts.obs_filter, Path(tmp), label)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if n == 0:
        Path(tmp).unlink(missing_ok=True)
        where = f"--obs-filter {opts.obs_filter!r}" if opts.obs_filter else "the experiment"
        raise IngestError(f"{where} matches no cell of {label}; check the filter's values (e.g. with tiledbsoma)")
    spec = SomaSpec(
        uri=exp_uri,
        tiledb_config=config,
        timestamp_ms=timestamp,
        measurement=opts.measurement,
        x_layer=opts.x_layer,
        joinids_path=str(Path(opts.out) / ".cellshard-work" / JOINIDS_NAME),
        n_obs=n,
        var_joinids=var["soma_joinid"].to_numpy().astype(np.int64),
        cell_id_prefix=prefix,
        organism=organism_label,
        dataset_default=dataset_default,
    )
    var_sha = _sha_strings(ids)
    item = {
        "uri": redact(exp_uri),
        "n_obs": n,
        "obs_joinids_sha256": joinids_sha,
        "gene_id_source": id_column,
        "var_ids_sha256": var_sha,
    }
    inputs = [PreparedInput(spec, label, n, ids, names, id_column, item, excluded)]
    source = {
        "kind": "census" if census else "soma",
        **{k: v for k, v in record.items() if k != "uri"},
        "uri": redact(record["uri"]),
        "experiment_uri": redact(exp_uri),
        "organism": organism,
        "measurement": opts.measurement,
        "x_layer": opts.x_layer,
        "obs_filter": opts.obs_filter,
        "var_filter": opts.var_filter,
        "gene_id_column": id_column,
    }
    identity = {
        "cell_id_prefix": prefix,
        "census_build_date": record.get("census_build_date"),
        "obs_joinids_sha256": joinids_sha,
        "var_ids_sha256": var_sha,
        "measurement": opts.measurement,
        "x_layer": opts.x_layer,
    }
    presence = None
    if "feature_dataset_presence_matrix" in exp.ms[opts.measurement]:
        presence = {
            "uri": exp_uri,
            "config": config,
            "timestamp_ms": timestamp,
            "measurement": opts.measurement,
            "var_joinids": spec.var_joinids,
            "datasets_uri": datasets_uri,
        }
    return Prepared(source["kind"], inputs, source, identity, columns, [(tmp, JOINIDS_NAME)], presence, timestamp)


def _sha_strings(ids: np.ndarray) -> str:
    return hashlib.sha256("\n".join("" if i is None else str(i) for i in ids).encode()).hexdigest()


def prepare_source(opts, work_params: dict | None = None) -> Prepared:
    """Open and check the source that ``opts`` names; ``work_params`` are those of an interrupted build."""
    chosen = [bool(opts.input), opts.census_version is not None or opts.census_uri is not None, bool(opts.soma_uri)]
    if sum(chosen) != 1:
        raise IngestError("give exactly one source: --input FILE.h5ad ..., --census-version VERSION, or --soma-uri URI")
    if chosen[0]:
        return _prepare_h5ad(opts)
    return _prepare_soma(opts, work_params)
