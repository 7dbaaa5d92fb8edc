"""``gene_medians.csv``: each gene's median of normalized expression, which rank-value encoding divides by.

Written by ``ingest build`` beside ``vocab.csv`` (docs/FORMAT.md), copied beside every checkpoint, and
read back here by every process that tokenizes cells the way the shards were tokenized.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

from ..errors import ShardError

__all__ = ["read_gene_medians", "token_medians"]


def read_gene_medians(path: Path | str) -> dict[str, float]:
    """``{gene_id: median}``; a malformed file is an error naming its line."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ShardError(f"{path}: cannot read gene medians ({exc.strerror})") from exc
    reader = csv.DictReader(io.StringIO(text))
    if not reader.fieldnames or not {"gene_id", "median"} <= set(reader.fieldnames):
        raise ShardError(f"{path}: gene medians need the columns gene_id,median (found {reader.fieldnames})")
    out: dict[str, float] = {}
    for line, row in enumerate(reader, start=2):
        try:
            value = float(row["median"])
        except (TypeError, ValueError):
            raise ShardError(f"{path}:{line}: median {row['median']!r} is not a number") from None
        if not (value > 0 and math.isfinite(value)):
            raise ShardError(f"{path}:{line}: median of {row['gene_id']} must be positive and finite")
        if row["gene_id"] in out:
            raise ShardError(f"{path}:{line}: gene {row['gene_id']} appears twice")
        out[row["gene_id"]] = value
    return out


def token_medians(medians: dict[str, float], token_of: dict[str, int]) -> dict[int, float]:
    """The medians by token, for the genes of the vocabulary."""
    return {token_of[g]: m for g, m in medians.items() if g in token_of}
