"""``SynthSpec``: what ``ingest synth`` writes, kept apart from the generator so that the command line
(``ingest synth --help``) is built without numpy, pandas or anndata."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .errors import IngestError

__all__ = ["SynthSpec"]

_CELL_TYPES = (
    "T cell",
    "B cell",
    "natural killer cell",
    "classical monocyte",
    "macrophage",
    "fibroblast",
    "endothelial cell",
    "epithelial cell",
    "hepatocyte",
    "neuron",
    "astrocyte",
    "erythrocyte",
    "plasma cell",
    "dendritic cell",
    "smooth muscle cell",
    "keratinocyte",
)
_ORGANISMS = {
    "homo_sapiens": ("Homo sapiens", "ENSG", str.upper),
    "mus_musculus": ("Mus musculus", "ENSMUSG", str.capitalize),
}


@dataclass(frozen=True)
class SynthSpec:
    """A synthetic Census-like corpus (``ingest synth``): its fields are the command's flags."""

    cells: int
    """Cells in the corpus."""
    genes: int = 10_000
    """Genes (var rows), with Ensembl-style ids."""
    datasets: int = 4
    """Datasets (each with its own donors and batch effect)."""
    organism: str = "homo_sapiens"
    """homo_sapiens or mus_musculus."""
    seed: int = 0
    """Seeds every random draw (same seed, same files)."""
    files: int = 1
    """Split the datasets over this many files."""
    cell_types: int = 12
    """Distinct cell types."""
    layout: str = "counts"
    """counts (in X) or cellxgene (log-normalized X, counts in raw.X)."""
    chunk_cells: int = field(default=4_096, metadata={"flag": False})
    """Cells generated and written at a time."""
    profile: str = "basic"
    """basic (each type has private marker genes: easy) or atlas (lineage/type/state hierarchy on co-regulated
    gene modules, dataset and donor batch effects, ambient RNA: what pretraining must learn)."""
    atlas: Any = field(default=None, metadata={"flag": False})
    """The atlas profile's generative parameters, a ``synth_atlas.AtlasParams`` (Python API; None: the
    calibrated ``synth_atlas.ATLAS``, which the CLI uses)."""

    def validate(self) -> None:
        if self.cells < 1 or self.genes < 100 or self.datasets < 1:
            raise IngestError("synth needs --cells >= 1, --genes >= 100 and --datasets >= 1")
        if self.organism not in _ORGANISMS:
            raise IngestError(f"--organism {self.organism!r}: choose one of {sorted(_ORGANISMS)}")
        if not 1 <= self.files <= self.datasets:
            raise IngestError(f"--files {self.files}: must be between 1 and --datasets ({self.datasets})")
        if not 1 <= self.cell_types <= len(_CELL_TYPES):
            raise IngestError(f"--cell-types must be between 1 and {len(_CELL_TYPES)}")
        if self.profile not in ("basic", "atlas"):
            raise IngestError(f"--profile {self.profile!r}: choose basic or atlas")
        if self.layout not in ("counts", "cellxgene"):
            raise IngestError(f"--layout {self.layout!r}: choose counts or cellxgene")
