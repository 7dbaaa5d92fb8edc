"""Gene panels: restrict each cell's tokens to a set of genes at load time, keeping their rank order.

- ``files``: panel CSVs with an ``Ensembl_ID`` column (scConcept's format). Each file may name its
  ``organism``; with several panels of one organism, one of them is drawn per batch (seeded), and the
  drawn panels of all organisms are joined: Ensembl ids are organism-specific, so each cell keeps the
  genes of its own organism's panel.
- ``random_genes: N``: per batch, ``N`` genes drawn from those expressed in the batch (all when fewer):
  batch-level gene selection.

Every draw is a function of (seed, epoch, the batch's cell ids), so it does not depend on the world
size, the workers or a resume. Filtering is one boolean lookup over the batch's tokens: a cell's
remaining genes stay in their order of rank; a cell left with none is served as ``<cls> <eos>``.
"""

from __future__ import annotations

import csv
import io
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ShardError
from ..format.vocab import Vocabulary

__all__ = ["PanelFile", "PanelFilter", "PanelSpec", "read_panel"]

log = logging.getLogger(__name__)

ID_COLUMN = "Ensembl_ID"


def read_panel(path: str | Path, vocab: Vocabulary) -> np.ndarray:
    """Token ids of a panel CSV's genes (those in the vocabulary; the others are counted in a warning)."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ShardError(f"{path}: cannot read the gene panel ({exc.strerror})") from None
    reader = csv.DictReader(io.StringIO(text))
    if ID_COLUMN not in (reader.fieldnames or []):
        raise ShardError(f"{path}: a gene panel needs an {ID_COLUMN} column (found {reader.fieldnames})")
    genes = [(row[ID_COLUMN] or "").strip() for row in reader]
    genes = [g for g in genes if g]
    token_of = vocab.token_of()
    known = [token_of[g] for g in genes if g in token_of]
    if not known:
        raise ShardError(
            f"{path}: none of its {len(genes)} genes is in the vocabulary (ids like {genes[:2]}); "
            "is it a panel of another organism or gene id version?"
        )
    if len(known) < len(genes):
        log.warning(
            "%s: %d of %d panel genes are not in the vocabulary and are left out",
            path,
            len(genes) - len(known),
            len(genes),
        )
    return np.unique(np.asarray(known, dtype=np.int64))


@dataclass(frozen=True)
class PanelFile:
    """A gene panel CSV and the organism it belongs to."""

    path: str
    """A CSV with an ``Ensembl_ID`` column (scConcept's panel format)."""
    organism: str | None = None
    """The organism whose cells it applies to; one panel is drawn per batch for each organism."""


@dataclass(frozen=True)
class PanelSpec:
    """Which genes to keep at load time: panel ``files``, or ``random_genes`` per batch (one of them)."""

    files: list[str | PanelFile] | None = None
    """Panel CSVs (paths, or ``{path, organism}``)."""
    random_genes: int | None = None
    """Per batch, this many of the genes expressed in the batch."""

    def __post_init__(self) -> None:
        files = list(self.files or [])
        if bool(files) == (self.random_genes is not None):
            raise ShardError("panels.: give either files (panel CSVs) or random_genes (a count), one of them")
        if self.random_genes is not None and int(self.random_genes) < 1:
            raise ShardError(f"panels.random_genes={self.random_genes}: must be at least 1")
        entries = []
        for j, f in enumerate(files):
            if isinstance(f, PanelFile):
                entries.append(f)
            elif isinstance(f, str):
                entries.append(PanelFile(f))
            elif isinstance(f, dict) and "path" in f and set(f) <= {"path", "organism"}:
                entries.append(PanelFile(str(f["path"]), f.get("organism")))
            else:
                raise ShardError(f"panels.files[{j}]: a path, or a mapping {{path, organism}}")
        object.__setattr__(self, "files", entries or None)
        object.__setattr__(self, "random_genes", None if self.random_genes is None else int(self.random_genes))

    @classmethod
    def parse(cls, spec: dict[str, Any] | PanelSpec) -> PanelSpec:
        if isinstance(spec, PanelSpec):
            return spec
        if not isinstance(spec, dict):
            raise ShardError(f"panels: expected a mapping with files or random_genes, got {spec!r}")
        unknown = sorted(set(spec) - {"files", "random_genes"})
        if unknown:
            raise ShardError(f"panels.{unknown[0]}: unknown key; use files or random_genes")
        return cls(spec.get("files"), spec.get("random_genes"))


@dataclass
class PanelFilter:
    """A picklable filter over batches of tokens."""

    masks: list[list[np.ndarray]]  # per organism: its panels as boolean masks over token ids
    random_genes: int | None
    vocab_size: int
    seed: int
    spec: dict[str, Any]

    @classmethod
    def build(cls, spec: PanelSpec, vocab: Vocabulary, seed: int) -> PanelFilter:
        """The filter of ``spec`` over ``vocab`` (panel files are read here, once)."""
        if spec.random_genes is not None:
            return cls([], spec.random_genes, vocab.size, seed, {"random_genes": spec.random_genes})
        by_organism: dict[str, list[np.ndarray]] = {}
        described = []
        for entry in spec.files or []:
            mask = np.zeros(vocab.size, dtype=bool)
            mask[read_panel(entry.path, vocab)] = True
            by_organism.setdefault(str(entry.organism or ""), []).append(mask)
            described.append({"path": Path(entry.path).name, "organism": entry.organism, "genes": int(mask.sum())})
        return cls([by_organism[k] for k in sorted(by_organism)], None, vocab.size, seed, {"files": described})

    def _draw(self, epoch: int, ids: np.ndarray) -> np.random.Generator:
        from .hashing import cell_hashes  # pandas: loaded when a panel draws, not to parse options

        key = int(np.bitwise_xor.reduce(cell_hashes(ids))) if len(ids) else 0
        return np.random.default_rng([self.seed, epoch, 7, key >> 32, key & 0xFFFFFFFF])

    def mask(self, epoch: int, ids: np.ndarray, genes: np.ndarray) -> np.ndarray:
        """The batch's kept-token mask over token ids."""
        rng = self._draw(epoch, ids)
        if self.random_genes is not None:
            present = np.unique(genes)
            keep = present
            if len(present) > self.random_genes:
                keep = rng.choice(present, self.random_genes, replace=False)
            out = np.zeros(self.vocab_size, dtype=bool)
            out[keep] = True
            return out
        chosen = [panels[int(rng.integers(len(panels)))] for panels in self.masks]
        return np.logical_or.reduce(chosen)

    def __call__(
        self, genes: np.ndarray, counts: np.ndarray, offsets: np.ndarray, ids: np.ndarray, epoch: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(genes, counts, offsets) with only the drawn panel's genes, in their order."""
        mask = self.mask(epoch, ids, genes)
        keep = mask[genes]  # ids come from the checksummed shards of this vocabulary
        cell = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))
        lengths = np.bincount(cell[keep], minlength=len(offsets) - 1)
        return genes[keep], counts[keep], np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
