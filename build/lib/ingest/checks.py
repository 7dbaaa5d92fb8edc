"""Checks that turn technically valid but surely unintended builds into errors before anything is written.

- **Gene ids that are not stable ids.** A vocabulary keyed on gene symbols silently differs between
  annotation releases and organisms, and a scanpy-style AnnData keeps symbols as ``var_names`` with the
  Ensembl ids in a column: taking the index would be the wrong choice made quietly. Ids must look like
  Ensembl stable gene ids (``ENSG…``, ``ENSMUSG…``, with or without a version) unless the user says
  otherwise; the error names a ``var`` column that does hold such ids when there is one.
- **A split that is empty or far smaller than asked.** The split hashes *keys* (donors, datasets, any
  obs column), so with few keys ``--val-fraction 0.1`` can send none of them to ``val``; the build would
  succeed and ``fit`` fail later. Measured on the real keys before the build starts.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence

import numpy as np
import pandas as pd

from .errors import IngestError
from .split import assign_split

__all__ = ["check_split", "check_stable_ids", "ensembl_share"]

log = logging.getLogger("ingest")

#: Ensembl stable gene ids of any species (ENSG, ENSMUSG, ENSDARG, ...), optionally versioned
_ENSEMBL = re.compile(r"^ENS[A-Z]*G\d+(\.\d+)?$")
#: below this share of Ensembl-looking ids a column is taken for symbols (or something else)
_MIN_SHARE = 0.5


def ensembl_share(ids: Sequence[object] | np.ndarray) -> float:
    """The share of non-missing ids that look like Ensembl stable gene ids (1.0 when none is present)."""
    text = pd.Series(np.asarray(ids, dtype=object)).dropna().astype(str)
    if text.empty:
        return 1.0
    return float(text.str.match(_ENSEMBL).mean())


def _textual(column: pd.Series) -> bool:
    """A var column that can hold gene ids: object, string or categorical (h5ad files store many
    string columns as categoricals)."""
    dtype = column.dtype
    return (
        pd.api.types.is_object_dtype(dtype)
        or pd.api.types.is_string_dtype(dtype)
        or isinstance(dtype, pd.CategoricalDtype)
    )


def check_stable_ids(ids: np.ndarray, where: str, column: str, allowed: bool, var: pd.DataFrame | None = None) -> None:
    """Refuse gene ids that do not look like Ensembl stable ids unless ``allowed``; name a better column."""
    if allowed or ensembl_share(ids) >= _MIN_SHARE:
        return
    sample = [str(g) for g in pd.Series(np.asarray(ids, dtype=object)).dropna().head(3)]
    better = []
    if var is not None:
        if column != "var.index" and ensembl_share(var.index.to_numpy()) >= _MIN_SHARE:
            better.append("var.index")
        for name in var.columns:
            if name != column and _textual(var[name]) and ensembl_share(var[name].to_numpy()) >= _MIN_SHARE:
                better.append(name)
    hint = (
        f"the Ensembl ids are in var column {better[0]!r}: use --gene-id-column {better[0]}"
        if better and better[0] != "var.index"
        else "choose the var column of Ensembl ids with --gene-id-column"
    )
    raise IngestError(
        f"{where}: gene ids from {column} do not look like Ensembl stable ids (e.g. {', '.join(sample)}); "
        f"{hint}, or pass --allow-non-ensembl-ids if these ids are intended"
    )


def check_split(keys: list[np.ndarray], seed: int, val_fraction: float, split_by: str, where: str) -> dict[str, int]:
    """Cells and distinct keys per split for the inputs' split keys; an error when ``val`` gets no cell
    or under half of the cells asked for. Returns ``{"train": cells, "val": cells, "keys": n}``."""
    all_keys = np.concatenate(keys) if keys else np.empty(0, dtype=object)
    split = assign_split(all_keys, seed, val_fraction)
    n = len(all_keys)
    n_val = int(split.sum())
    n_keys = len(pd.unique(pd.Series(all_keys, dtype=object)))
    asked = val_fraction * n
    if val_fraction > 0 and n and (n_val == 0 or n_val < 0.5 * asked):
        raise IngestError(
            f"{where}: --val-fraction {val_fraction:g} with --split-by {split_by} sends {n_val:,} of {n:,} cells "
            f"to val (asked for ~{asked:,.0f}): the {n_keys:,} {split_by} value(s) are too few for the hash "
            f"to split them in that share; use --split-by with a column of more values (e.g. cell), a larger "
            f"--val-fraction, or another --seed"
        )
    out = {"train": n - n_val, "val": n_val, "keys": n_keys, "val_share": n_val / n if n else 0.0}
    if val_fraction > 0 and n and n_val > 1.5 * asked:
        values, counts = np.unique(np.asarray(all_keys, dtype=str), return_counts=True)
        big = int(np.argmax(counts))
        log.warning(
            "warning: %s: --val-fraction %g with --split-by %s sends %s of %s cells (%.1f%%) to val: the %s %s "
            "value(s) are uneven (the largest, %r, holds %s cells) and a key goes wholly to one side; use "
            "--split-by with a column of more, smaller groups, or another --seed",
            where,
            val_fraction,
            split_by,
            f"{n_val:,}",
            f"{n:,}",
            100 * n_val / n,
            f"{n_keys:,}",
            split_by,
            str(values[big]),
            f"{int(counts[big]):,}",
        )
    return out
