"""Several shard sets read as one: the ``MultiReader`` that joins the streams of a mix (``plan.Stream``).

A ``MultiReader`` numbers the shards of all streams one after the other (stream 0's, then stream 1's, ...)
and serves them through the same interface as a ``ShardSetReader``, so the dataset's planning and
reading do not change. The streams must share one token space: by default their vocabularies must be
identical (same gene id -> token id), and a mismatch is refused naming the first differing gene.
With ``vocab="remap"`` the token space is the union by gene id: the first stream's ids are kept, genes
the others add get new ids after them, and every read is translated through a lookup table (genes
with no place in the union do not exist by construction). Gene ids are organism-specific (Ensembl),
so a human and a mouse set built separately join into one space without colliding.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

import numpy as np

from ..errors import ShardError
from ..format.manifest import ShardEntry
from ..format.records import CellRun
from ..format.vocab import Vocabulary, vocab_to_csv
from ..plan.mixing import Stream
from ..storage.remote import redact
from .config import VOCAB_MODES
from .readers import ShardSetReader

__all__ = ["VOCAB_MODES", "MultiReader"]


def _remap_table(vocab: Vocabulary, joint: dict[str, int]) -> np.ndarray:
    """token id of ``vocab`` -> token id in the joint space (-1 for specials, which shards never store)."""
    lut = np.full(vocab.size, -1, dtype=np.int32)
    lut[vocab.tokens] = [joint[g] for g in vocab.gene_ids]
    return lut


class MultiReader:
    """The shards of several streams, numbered one after the other, read through one interface."""

    def __init__(self, streams: list[Stream], split: str, *, vocab_join: str = "same", **reader_options: Any) -> None:
        if not streams:
            raise ShardError("streams: give at least one stream")
        if vocab_join not in VOCAB_MODES:
            raise ShardError(
                f"vocab_join={vocab_join!r}: choose same (identical vocabularies) or remap (join by gene id)"
            )
        self.streams, self.vocab_mode = streams, vocab_join
        self.readers = [ShardSetReader(s.path, s.split or split, **reader_options) for s in streams]
        self.names = [s.name or f"stream{i}" for i, s in enumerate(streams)]
        if len(set(self.names)) != len(self.names):
            raise ShardError(f"streams: names must differ (got {self.names})")
        formats = {r.format for r in self.readers}
        self.format = formats.pop() if len(formats) == 1 else "mixed"
        one = len(self.readers) == 1  # a single stream names its shards as a plain shard set does
        self.shards: list[ShardEntry] = [
            sh if one else dataclasses.replace(sh, path=f"{self.names[k]}/{sh.path}")
            for k, r in enumerate(self.readers)
            for sh in r.shards
        ]
        self.shard_cells = np.concatenate([r.shard_cells for r in self.readers])
        self.shard_tokens = np.concatenate([r.shard_tokens for r in self.readers])
        self.stream_of_shard = np.concatenate([np.full(len(r.shards), k) for k, r in enumerate(self.readers)])
        self._first = np.concatenate([[0], np.cumsum([len(r.shards) for r in self.readers])])
        self.cell_starts = np.concatenate([[0], np.cumsum(self.shard_cells)])  # joint cell numbering
        self._vocab, self._luts = self._join([r.vocab() for r in self.readers])
        ids = [r.manifest.build_id for r in self.readers]
        self.build_id = "+".join(ids) if len(ids) > 1 else ids[0]

    def _join(self, vocabs: list[Vocabulary]) -> tuple[Vocabulary, list[np.ndarray | None]]:
        first = vocabs[0]
        if self.vocab_mode == "same":
            for k, v in enumerate(vocabs[1:], start=1):
                if v.special != first.special or v.token_of() != first.token_of():
                    a, b = first.token_of(), v.token_of()
                    diff = next((g for g in list(a) + list(b) if a.get(g) != b.get(g)), "a special token")
                    raise ShardError(
                        f"streams: {redact(self.readers[k].root)} has another vocabulary than "
                        f"{redact(self.readers[0].root)} (first difference: {diff}); build both with the same "
                        "`ingest build --vocab`, or set vocab_join: remap to join them by gene id"
                    )
            return first, [None] * len(vocabs)
        joint = first.token_of()
        names = dict(zip(first.gene_ids, first.gene_names, strict=True))
        next_id = first.size
        for v in vocabs[1:]:
            for g, name in zip(v.gene_ids, v.gene_names, strict=True):
                if g not in joint:
                    joint[g], names[g] = next_id, name
                    next_id += 1
        ids = tuple(joint)
        union = Vocabulary(
            ids, tuple(names[g] for g in ids), np.array([joint[g] for g in ids], np.int64), dict(first.special)
        )
        luts = [None] + [_remap_table(v, joint) for v in vocabs[1:]]
        return union, luts

    # -- what the dataset uses -------------------------------------------------------------------
    def vocab(self) -> Vocabulary:
        return self._vocab

    def vocab_sha256(self) -> str:
        if self.vocab_mode == "same":
            return self.readers[0].manifest.vocab.sha256
        return hashlib.sha256(vocab_to_csv(self._vocab)).hexdigest()

    def _local(self, i: int) -> tuple[ShardSetReader, int, int]:
        k = int(self.stream_of_shard[i])
        return self.readers[k], k, i - int(self._first[k])

    def stream_cells(self, k: int) -> slice:
        """Stream ``k``'s cells in the joint cell numbering (shard after shard)."""
        return slice(int(self.cell_starts[self._first[k]]), int(self.cell_starts[self._first[k + 1]]))

    def stream_shard_counts(self) -> list[int]:
        """Shards of each stream (in this split): stream ``k``'s follow stream ``k - 1``'s."""
        return np.diff(self._first).tolist()

    def stream_sizes(self) -> list[int]:
        """Cells of each stream (in this split)."""
        return np.diff(self.cell_starts[self._first]).tolist()

    def cell_tokens(self, i: int) -> np.ndarray:
        reader, _, j = self._local(i)
        return reader.cell_tokens(j)

    def column(self, i: int, name: str) -> np.ndarray:
        reader, _, j = self._local(i)
        return reader.column(j, name)

    def read(self, i: int, start: int, stop: int) -> CellRun:
        reader, k, j = self._local(i)
        run = reader.read(j, start, stop)
        lut = self._luts[k]
        if lut is None:
            return run
        genes = run.genes
        if len(genes) and (genes.max() >= len(lut) or genes.min() < 0):
            raise ShardError(f"{self.shards[i].path}: a gene token outside its vocabulary; run `ingest verify`")
        return run._replace(genes=lut[genes])  # every gene of a stream has a place in the union

    def identity(self) -> str:
        """What a saved loader state must match: the builds, splits, kinds and the vocabulary join."""
        spec = [[r.manifest.build_id, r.split, *s.kind()] for r, s in zip(self.readers, self.streams, strict=True)]
        return json.dumps({"streams": spec, "vocab": self.vocab_mode}, sort_keys=True)
