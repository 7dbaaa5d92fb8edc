"""What every source of a build gives the pipeline, prepared and checked before anything is written.

Whatever the source, a build sees a list of inputs, each with a row count, a gene id per column and a
picklable ``spec`` whose ``open()`` gives a reader with ``iter_blocks`` (row blocks of integer counts as
CSR) and ``obs_frame`` (``cell_id`` plus metadata columns). Vocabulary, medians, split, tokenization,
shuffle and writing are then the same code for all of them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import IngestError

__all__ = ["CENSUS_DEFAULT_OBS_COLUMNS", "JOINIDS_NAME", "Prepared", "PreparedInput", "check_columns"]

CENSUS_DEFAULT_OBS_COLUMNS = (
    "dataset_id",
    "assay",
    "cell_type",
    "tissue",
    "tissue_general",
    "disease",
    "donor_id",
    "sex",
    "development_stage",
    "suspension_type",
)
JOINIDS_NAME = "obs_joinids.i64"


@dataclass
class PreparedInput:
    spec: Any  # H5adSpec | SomaSpec
    label: str  # file path or URI, for messages
    n_obs: int
    ids: np.ndarray  # gene id per column (None: no id, or left out by --var-filter)
    names: np.ndarray
    id_source: str
    record: dict  # the manifest's entry for this input
    excluded: int = 0  # columns left out by --var-filter


@dataclass
class Prepared:
    kind: str  # h5ad | census | soma
    inputs: list[PreparedInput]
    source: dict  # the manifest's "source" section, "inputs" aside
    identity: dict  # what identifies the source's content, for the build fingerprint
    obs_columns: list[str]
    staged: list[tuple[str, str]] = field(default_factory=list)  # (temporary file, name in the work dir)
    presence: dict | None = None  # where the feature_dataset_presence_matrix is, when the source has one
    timestamp_ms: int | None = None  # the SOMA snapshot read (kept in the work dir so that a resume reads it too)
    split: dict | None = None  # the split the keys give (``checks.check_split``), when checked while preparing

    @property
    def cells_matched(self) -> int:
        return sum(i.n_obs for i in self.inputs)


def check_columns(columns: list[str], available: list[str], label: str, split_by: str, val_fraction: float) -> None:
    named = split_by not in ("cell", "dataset_id", "donor_id")  # not a default that may be absent when unused
    if (val_fraction > 0 or named) and split_by not in ("cell", "dataset_id") and split_by not in available:
        raise IngestError(
            f"{label}: --split-by {split_by} but obs has no {split_by} column (columns: {', '.join(available)}); "
            "name one of them, or use dataset_id or cell"
        )
    for col in columns:
        if col not in available:
            raise IngestError(f"{label}: --obs-columns {col!r} is not an obs column (columns: {', '.join(available)})")
