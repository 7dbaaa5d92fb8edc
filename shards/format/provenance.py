"""Where a stored cell came from: its ``cell_id`` read back against the manifest's ``source``.

A ``cell_id`` is ``<file stem>:<obs_name>`` (h5ad inputs), ``census:<release>:<soma_joinid>`` or
``<experiment name>:<soma_joinid>`` (SOMA). This maps it to the input it was read from (the path or URI
recorded in the manifest) and the row there: the obs name, or the joinid. A user joins embeddings back
to their own AnnData or Census query with these two columns.
"""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["cell_sources"]


def _stem(path: str) -> str:
    return PurePosixPath(str(path).replace("\\", "/").rstrip("/")).name.removesuffix(".h5ad")


def cell_sources(cell_ids: np.ndarray | list[str], source: dict[str, Any]) -> pd.DataFrame:
    """``source_file`` and ``obs_name`` (sets built from files: inputs recorded by ``path``) or
    ``source_uri`` and ``soma_joinid`` (SOMA and Census sets: by ``uri``) of each cell id, in order, from
    the manifest's ``source`` record."""
    ids = pd.Series(np.asarray(cell_ids, dtype=object).astype(str))
    inputs = source.get("inputs", [])
    if inputs and all("path" in i for i in inputs):  # files (h5ad): the id names the file's stem
        # (by the inputs' form, not the source's kind: which sources exist is ingest's registry)
        parts = ids.str.split(":", n=1, expand=True)
        by_stem = {_stem(i["path"]): i["path"] for i in inputs}
        files = parts[0].map(by_stem)
        if files.isna().any():
            bad = ids[files.isna()].iloc[0]
            raise ValueError(f"cell {bad!r}: its file stem is not one of the set's inputs ({', '.join(by_stem)})")
        return pd.DataFrame({"source_file": files.to_numpy(), "obs_name": parts[1].to_numpy()})
    uri = inputs[0].get("uri") if len(inputs) == 1 else source.get("uri")
    joinids = ids.str.rsplit(":", n=1).str[1]
    return pd.DataFrame({"source_uri": np.full(len(ids), uri, dtype=object), "soma_joinid": joinids.astype(np.int64)})
