"""Preparing a SOMA experiment for a build, whichever source found it (the Census or a SOMA URI).

A source resolves what the user named into an ``ExperimentTarget`` (``census.census_target``,
``soma.soma_target``); ``prepare_experiment`` then checks and scans that experiment the same way for
both: the measurement and X layer, the obs columns, the var ids and filter, the matching cells' joinids
(staged into the work directory) and the presence matrix, when there is one.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from shards.storage.remote import redact

from ..checks import check_stable_ids
from ..errors import IngestError
from ..vocab import clean_gene_ids
from .base import JOINIDS_NAME, Prepared, PreparedInput, check_columns
from .prepare import with_split_column

__all__ = ["ExperimentTarget", "prepare_experiment", "tiledb_config"]


@dataclass(frozen=True)
class ExperimentTarget:
    """The experiment a source points at, and how its cells are named."""

    kind: str  # the manifest's source kind: census | soma
    uri: str  # the experiment's URI
    label: str  # what messages name (the Census URI or the SOMA URI)
    config: dict  # the TileDB configuration that opens it
    record: dict  # what the manifest records of the source (its URI, a Census release's dates)
    cell_id_prefix: str  # prepended to each soma_joinid: a cell id that says where the cell came from
    dataset_default: str  # the dataset id of cells whose obs has none
    organism: str | None = None  # the Census organism key (homo_sapiens)
    organism_label: str | None = None  # and as obs writes it (Homo sapiens)
    datasets_uri: str | None = None  # the Census's datasets table (presence matrix names)
    default_obs_columns: tuple[str, ...] = field(default=())  # stored when --obs-columns is not given


def tiledb_config(opts) -> dict:
    """The TileDB settings of a build: SOMA's read buffers and the user's ``--tiledb-config``."""
    return {
        "soma.init_buffer_bytes": int(opts.soma_buffer_bytes),
        "py.init_buffer_bytes": int(opts.soma_buffer_bytes),
        **opts.tiledb_settings(),
    }


def _gene_ids(var: pd.DataFrame, column: str, label: str) -> np.ndarray:
    if column not in var.columns:
        raise IngestError(f"{label}: --gene-id-column {column!r} is not a var column (columns: {list(var.columns)})")
    return clean_gene_ids(var[column].to_numpy(), label, f"var.{column}", " (in the Census: feature_id)")


def _sha_strings(ids: np.ndarray) -> str:
    return hashlib.sha256("\n".join("" if i is None else str(i) for i in ids).encode()).hexdigest()


@dataclass(frozen=True)
class _Checked:
    """What ``_check`` read of the experiment: the obs columns to store, the var ids and names."""

    columns: list[str]
    ids: np.ndarray  # per var column: its gene id (None: no id, or left out by --var-filter)
    names: np.ndarray
    id_column: str
    excluded: int  # var columns left out by --var-filter


def _check(opts, target: ExperimentTarget, exp) -> tuple[_Checked, pd.DataFrame]:
    """The measurement, X layer, obs columns and var ids the options name, each checked."""
    from .soma import read_var

    label = target.label
    if opts.measurement not in exp.ms:
        raise IngestError(f"{label}: no measurement {opts.measurement!r} (measurements: {', '.join(exp.ms.keys())})")
    layers = list(exp.ms[opts.measurement].X.keys())
    if opts.x_layer not in layers:
        raise IngestError(
            f"{label}: measurement {opts.measurement!r} has no X layer {opts.x_layer!r} (layers: {layers})"
        )
    columns = list(target.default_obs_columns if opts.obs_columns is None else opts.obs_columns or [])
    columns = with_split_column(columns, opts.split_by, opts.val_fraction)
    obs_names = [c for c in exp.obs.schema.names if c != "soma_joinid"]
    check_columns(columns, obs_names, label, opts.split_by, opts.val_fraction)
    var = read_var(exp, opts.measurement, opts.var_filter, label)
    id_column = opts.gene_id_column or "feature_id"
    ids = _gene_ids(var, id_column, label)
    check_stable_ids(ids, label, f"var.{id_column}", opts.allow_non_ensembl_ids, var)
    selected = var["selected"].to_numpy()
    ids[~selected] = None
    names = var["feature_name"].astype(str).to_numpy() if "feature_name" in var.columns else np.full(len(var), "")
    return _Checked(columns, ids, names, id_column, int((~selected).sum())), var


def _scan(opts, label: str, exp) -> tuple[int, str, str]:
    """The cells ``--obs-filter`` matches: (how many, their joinids' sha256, the temporary joinids file,
    moved into the work directory when the build starts)."""
    from .soma import scan_obs

    fd, tmp = tempfile.mkstemp(prefix="cellshard-joinids-", suffix=".i64")
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
    return n, joinids_sha, tmp


def _documents(opts, target: ExperimentTarget, id_column: str, joinids_sha: str, var_sha: str) -> tuple[dict, dict]:
    """(the manifest's source section, what identifies the source's content for the build's fingerprint)."""
    exp_uri = target.uri
    record = target.record
    source = {
        "kind": target.kind,
        **{k: v for k, v in record.items() if k != "uri"},
        "uri": redact(record["uri"]),
        "experiment_uri": redact(exp_uri),
        "organism": target.organism,
        "measurement": opts.measurement,
        "x_layer": opts.x_layer,
        "obs_filter": opts.obs_filter,
        "var_filter": opts.var_filter,
        "gene_id_column": id_column,
    }
    identity = {
        "cell_id_prefix": target.cell_id_prefix,
        "census_build_date": record.get("census_build_date"),
        "obs_joinids_sha256": joinids_sha,
        "var_ids_sha256": var_sha,
        "measurement": opts.measurement,
        "x_layer": opts.x_layer,
    }
    return source, identity


def prepare_experiment(opts, target: ExperimentTarget, work_params: dict | None) -> Prepared:
    """Check and scan ``target`` for a build (see the module docstring)."""
    from .soma import SomaSpec, open_experiment

    label, exp_uri, config = target.label, target.uri, target.config
    timestamp = int((work_params or {}).get("soma_timestamp_ms") or time.time() * 1000)
    exp = open_experiment(exp_uri, config, timestamp)
    checked, var = _check(opts, target, exp)
    ids, id_column = checked.ids, checked.id_column
    n, joinids_sha, tmp = _scan(opts, label, exp)
    spec = SomaSpec(
        uri=exp_uri,
        tiledb_config=config,
        timestamp_ms=timestamp,
        measurement=opts.measurement,
        x_layer=opts.x_layer,
        joinids_path=str(Path(opts.out) / ".cellshard-work" / JOINIDS_NAME),
        n_obs=n,
        var_joinids=var["soma_joinid"].to_numpy().astype(np.int64),
        cell_id_prefix=target.cell_id_prefix,
        organism=target.organism_label,
        dataset_default=target.dataset_default,
    )
    var_sha = _sha_strings(ids)
    item = {
        "uri": redact(exp_uri),
        "n_obs": n,
        "obs_joinids_sha256": joinids_sha,
        "gene_id_source": id_column,
        "var_ids_sha256": var_sha,
    }
    inputs = [PreparedInput(spec, label, n, ids, checked.names, id_column, item, checked.excluded)]
    source, identity = _documents(opts, target, checked.id_column, joinids_sha, var_sha)
    presence = None
    if "feature_dataset_presence_matrix" in exp.ms[opts.measurement]:
        presence = {
            "uri": exp_uri,
            "config": config,
            "timestamp_ms": timestamp,
            "measurement": opts.measurement,
            "var_joinids": spec.var_joinids,
            "datasets_uri": target.datasets_uri,
        }
    staged = [(tmp, JOINIDS_NAME)]
    return Prepared(target.kind, inputs, source, identity, checked.columns, staged, presence, timestamp)
