"""``vocab.csv``: the token space of a shard set (contract).

Columns ``gene_id,gene_name,token``. Special tokens have rows of their own (``gene_id`` is the token's
text), so every stage reads their ids from the file and none hard-codes them: a vocabulary supplied by a
user (e.g. scConcept's, where ``<cls>`` is 0 and ``<pad>`` 1) keeps its ids.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import ShardError

__all__ = ["SPECIAL_TOKENS", "Vocabulary", "parse_vocab", "read_vocab", "vocab_to_csv"]

#: In this order they take ids 0..3 in a vocabulary built by ingest.
SPECIAL_TOKENS: tuple[str, ...] = ("<pad>", "<mask>", "<cls>", "<eos>")


@dataclass(frozen=True)
class Vocabulary:
    """Gene ids (Ensembl, never names) and special tokens mapped to integer token ids."""

    gene_ids: tuple[str, ...]
    gene_names: tuple[str, ...]
    tokens: np.ndarray  # int64, aligned with gene_ids
    special: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(set(self.gene_ids)) != len(self.gene_ids):
            raise ShardError("vocabulary has duplicate gene ids")
        all_ids = list(self.tokens) + list(self.special.values())
        if len(set(all_ids)) != len(all_ids):
            raise ShardError("vocabulary assigns one token id twice")

    @property
    def size(self) -> int:
        """Embedding rows needed: one more than the largest id."""
        ids = list(self.tokens) + list(self.special.values())
        return int(max(ids)) + 1 if ids else 0

    @property
    def pad_id(self) -> int:
        return self.special["<pad>"]

    def token_of(self) -> dict[str, int]:
        return dict(zip(self.gene_ids, self.tokens.tolist(), strict=True))

    def rows(self) -> list[tuple[str, str, int]]:
        rows = [(t, t, i) for t, i in self.special.items()]
        rows += list(zip(self.gene_ids, self.gene_names, self.tokens.tolist(), strict=True))
        return sorted(rows, key=lambda r: r[2])


def vocab_to_csv(vocab: Vocabulary) -> bytes:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["gene_id", "gene_name", "token"])
    writer.writerows(vocab.rows())
    return buf.getvalue().encode()


def read_vocab(path: Path | str, *, require_special: bool = True) -> Vocabulary:
    """Read a ``gene_id,[gene_name,]token`` CSV; special-token rows are recognised by their gene_id."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ShardError(f"{path}: cannot read the vocabulary ({exc.strerror})") from exc
    return parse_vocab(text, str(path), require_special=require_special)


def parse_vocab(text: str, path: str, *, require_special: bool = True) -> Vocabulary:
    """A vocabulary from the text of a ``vocab.csv`` (``path`` names it in errors)."""
    reader = csv.DictReader(io.StringIO(text))
    cols = reader.fieldnames or []
    if "gene_id" not in cols or "token" not in cols:
        raise ShardError(f"{path}: a vocabulary needs the columns gene_id and token (found {cols})")
    ids: list[str] = []
    names: list[str] = []
    tokens: list[int] = []
    special: dict[str, int] = {}
    for line, row in enumerate(reader, start=2):
        gid = (row["gene_id"] or "").strip()
        try:
            tok = int(row["token"])
        except (TypeError, ValueError):
            raise ShardError(f"{path}:{line}: token {row['token']!r} is not an integer") from None
        if not gid:
            raise ShardError(f"{path}:{line}: empty gene_id")
        if tok < 0:
            raise ShardError(f"{path}:{line}: negative token id {tok}")
        if gid in SPECIAL_TOKENS:
            special[gid] = tok
            continue
        ids.append(gid)
        names.append((row.get("gene_name") or "").strip())
        tokens.append(tok)
    if require_special and set(special) != set(SPECIAL_TOKENS):
        missing = sorted(set(SPECIAL_TOKENS) - set(special))
        raise ShardError(f"{path}: the vocabulary lacks rows for the special tokens {missing}")
    if len(set(ids)) != len(ids):
        seen: set[str] = set()
        dup = next(g for g in ids if g in seen or seen.add(g))  # type: ignore[func-returns-value]
        raise ShardError(f"{path}: gene id {dup} appears twice")
    try:
        return Vocabulary(tuple(ids), tuple(names), np.asarray(tokens, dtype=np.int64), special)
    except ShardError as exc:
        raise ShardError(f"{path}: {exc}") from None
