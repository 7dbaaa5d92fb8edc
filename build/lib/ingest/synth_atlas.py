"""``ingest synth --profile atlas``: a synthetic atlas whose cell types are *not* readable off the raw
inputs, so that pretraining has something to show.

The ``basic`` profile gives each cell type strong private up/down genes: an untrained encoder already
separates them. Here the structure is that of a real atlas, and so are the nuisances:

- **A hierarchy of identities**: lineage → type → state. Each level switches on gene *modules* (sets of
  co-regulated genes with their own loadings): a lineage 3 large ones, a type 2 smaller ones as strongly
  (marker sets of tens of genes), a state 1 weakly (``cell_state`` is a label too, finer and harder than
  ``cell_type``). 48 types by default: more type directions than 50 principal components hold beside
  lineage, state and batch, as in a real atlas (the argument from real data, with measured marker
  strengths: benchmarks/results/2026-12-05-atlas-recipe/README.md).
- **Gene-gene covariance**: every cell also has continuous activities on every module (a latent factor
  model: programmes that vary within a type, e.g. cycling or stress), so genes co-vary in blocks.
- **Batch effects stronger than some type differences**: each dataset scales a large share of genes
  (``dataset_shift`` on ``dataset_genes`` of them), each donor a smaller share; a dataset also has its own
  sequencing depth and its own gene panel (unmeasured genes absent, as in CELLxGENE).
- **Counts as sequenced**: negative-binomial around the rates, library sizes log-normal with a wide
  spread (~1-3k genes detected per cell), and ambient RNA: a few percent of each cell's reads drawn from
  its dataset's soup (the average expression of the dataset's cells).

Every parameter is in ``AtlasParams`` (documented in docs/USAGE.md with the measured calibration);
draws come from ``numpy.random.default_rng`` keyed on (seed, purpose, dataset, chunk), as in ``synth``.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import numpy as np
import pandas as pd

__all__ = ["ATLAS", "AtlasParams", "atlas_cells", "atlas_world"]

#: lineage → its types (Cell Ontology names); a lineage past the table, or a type past its row, is numbered
_TYPES = {
    "lymphoid": ("T cell", "B cell", "natural killer cell", "plasma cell", "innate lymphoid cell", "regulatory T cell"),
    "myeloid": (
        "classical monocyte",
        "non-classical monocyte",
        "macrophage",
        "conventional dendritic cell",
        "plasmacytoid dendritic cell",
        "neutrophil",
    ),
    "stromal": ("fibroblast", "myofibroblast cell", "pericyte", "smooth muscle cell", "mesothelial cell", "adipocyte"),
    "epithelial": ("keratinocyte", "hepatocyte", "basal cell", "ciliated cell", "goblet cell", "ionocyte"),
    "neural": (
        "neuron",
        "astrocyte",
        "oligodendrocyte",
        "oligodendrocyte precursor cell",
        "ependymal cell",
        "Schwann cell",
    ),
    "erythroid": (
        "erythrocyte",
        "erythroblast",
        "megakaryocyte",
        "hematopoietic stem cell",
        "common myeloid progenitor",
        "mast cell",
    ),
    "endothelial": (
        "endothelial cell of artery",
        "vein endothelial cell",
        "capillary endothelial cell",
        "endothelial cell of lymphatic vessel",
        "endocardial cell",
        "endothelial tip cell",
    ),
    "muscle": (
        "cardiac muscle cell",
        "skeletal muscle fiber",
        "skeletal muscle satellite cell",
        "myoblast",
        "fast muscle cell",
        "slow muscle cell",
    ),
}
_LINEAGES = tuple(_TYPES)
_STATES = ("resting", "activated", "cycling", "stressed")


@dataclass(frozen=True)
class AtlasParams:
    """The generative parameters (log scale unless said)."""

    lineages: int = 8
    types_per_lineage: int = 6
    states_per_type: int = 3
    modules: int = 240  #: gene modules (co-regulated sets)
    module_genes: tuple[int, int] = (15, 40)  #: genes per module (uniform range)
    lineage_modules: int = 3  #: modules a lineage switches on ...
    lineage_effect: float = 1.5  #: ... with this mean activation
    type_modules: int = 2
    type_effect: float = 1.5
    state_modules: int = 1
    state_effect: float = 0.6
    latent_sd: float = 0.45  #: per-cell continuous activity on every module (covariance within a type)
    dataset_genes: float = 0.4  #: share of genes a dataset shifts ...
    dataset_shift: float = 0.5  #: ... by N(0, this)
    donor_genes: float = 0.2
    donor_shift: float = 0.3
    depth_median: float = 10_000.0  #: UMIs of a median cell
    depth_sd: float = 0.55  #: per cell
    dataset_depth_sd: float = 0.45
    ambient: tuple[float, float] = (1.5, 30.0)  #: Beta(a, b) share of reads from the dataset's soup
    dispersion: float = 0.3  #: NB phi: variance = mu + phi mu^2
    donors_per_dataset: tuple[int, int] = (8, 15)
    panel: tuple[float, float] = (0.7, 0.95)  #: share of genes a dataset measures (uniform range)


ATLAS = AtlasParams()


def _type_names(params: AtlasParams) -> tuple[list[str], list[str]]:
    """(type name, lineage name) of every type, lineage by lineage: names are unique."""
    names, lineage = [], []
    for lin in range(params.lineages):
        lname = _LINEAGES[lin] if lin < len(_LINEAGES) else f"lineage {lin}"
        row = _TYPES.get(lname, ())
        for t in range(params.types_per_lineage):
            names.append(row[t] if t < len(row) else f"{lname} type {t}")
            lineage.append(lname)
    return names, lineage


def atlas_world(seed: int, genes: int, datasets: int, cells: int, params: AtlasParams = ATLAS) -> dict:
    """Modules, identities, datasets (panels, shifts, donors, depth): everything but the cells.
    Long because it is one generative model drawn in order (lineages, types, states, modules, batch effects);
    its steps share the random stream, so splitting would only pass it around."""
    rng = np.random.default_rng([seed, 10])
    g, p = genes, params
    log_mean = rng.normal(-2.2, 1.8, g)
    loadings = np.zeros((p.modules, g), np.float32)
    for m in range(p.modules):
        members = rng.choice(g, size=int(rng.integers(*p.module_genes)), replace=False)
        loadings[m, members] = rng.gamma(4.0, 0.25, members.size)  # positive, mean 1
    n_types = p.lineages * p.types_per_lineage
    activation = np.zeros((n_types * p.states_per_type, p.modules), np.float32)
    for lin in range(p.lineages):
        on_lin = rng.choice(p.modules, p.lineage_modules, replace=False)
        for t in range(p.types_per_lineage):
            k = lin * p.types_per_lineage + t
            on_type = rng.choice(p.modules, p.type_modules, replace=False)
            for s in range(p.states_per_type):
                on_state = rng.choice(p.modules, p.state_modules, replace=False)
                row = activation[k * p.states_per_type + s]
                row[on_lin] += rng.normal(p.lineage_effect, 0.2, on_lin.size)
                row[on_type] += rng.normal(p.type_effect, 0.15, on_type.size)
                row[on_state] += rng.normal(p.state_effect, 0.1, on_state.size)
    names, lineage = _type_names(p)
    props = rng.dirichlet(np.full(datasets, 2.0))
    n_per = np.floor(props * cells).astype(int)
    n_per[: cells - n_per.sum()] += 1
    from .synth import _ASSAYS, _TISSUES

    out = []
    for d in range(datasets):
        shift = np.zeros(g, np.float32)
        hit = rng.random(g) < p.dataset_genes
        shift[hit] = rng.normal(0.0, p.dataset_shift, int(hit.sum()))
        donors = []
        for _ in range(int(rng.integers(*p.donors_per_dataset))):
            dshift = np.zeros(g, np.float32)
            dhit = rng.random(g) < p.donor_genes
            dshift[dhit] = rng.normal(0.0, p.donor_shift, int(dhit.sum()))
            donors.append(dshift)
        tissue, tissue_general = _TISSUES[rng.integers(len(_TISSUES))]
        out.append(
            {
                "id": str(uuid.UUID(bytes=rng.bytes(16), version=4)),
                "n": int(n_per[d]),
                "panel": np.sort(rng.choice(g, size=int(g * rng.uniform(*p.panel)), replace=False)),
                "assay": _ASSAYS[rng.integers(len(_ASSAYS))],
                "tissue": tissue,
                "tissue_general": tissue_general,
                "suspension": "nucleus" if rng.random() < 0.25 else "cell",
                "depth": float(np.exp(rng.normal(0.0, p.dataset_depth_sd))),
                "types": rng.dirichlet(np.full(n_types * p.states_per_type, 2.0)),
                "shift": shift,
                "donors": donors,
                "primary": bool(rng.random() > 0.1),
            }
        )
    return {
        "log_mean": log_mean,
        "loadings": loadings,
        "activation": activation,
        "type_names": names,
        "lineage_names": lineage,
        "params": p,
        "datasets": out,
    }


def atlas_cells(
    seed: int, world: dict, d: int, n: int, chunk: int, panel: np.ndarray, organism: str, with_activity: bool = False
):
    """Dense counts (n × panel genes, float32) and obs rows for ``n`` cells of dataset ``d`` (and, with
    ``with_activity``, each cell's latent module activities: what an ideal model could recover at best)."""
    ds, p = world["datasets"][d], world["params"]
    rng = np.random.default_rng([seed, 11, d, chunk])
    identity = rng.choice(len(world["activation"]), size=n, p=ds["types"])
    k, state = identity // p.states_per_type, identity % p.states_per_type
    donor = rng.integers(len(ds["donors"]), size=n)
    loadings = world["loadings"][:, panel]
    activity = world["activation"][identity] + rng.normal(0.0, p.latent_sd, (n, p.modules)).astype(np.float32)
    logit = world["log_mean"][panel][None, :] + activity @ loadings + ds["shift"][panel][None, :]
    logit += np.stack(ds["donors"])[donor][:, panel]
    rate = np.exp(logit - logit.max(axis=1, keepdims=True))
    rate /= rate.sum(axis=1, keepdims=True)
    soup = rate.mean(axis=0, keepdims=True)  # the chunk's cells stand for the dataset's soup
    contamination = rng.beta(*p.ambient, size=(n, 1)).astype(np.float32)
    rate = (1.0 - contamination) * rate + contamination * soup
    depth = np.exp(rng.normal(np.log(p.depth_median), p.depth_sd, n)) * ds["depth"]
    mu = rate * depth[:, None]
    gamma = rng.standard_gamma(1.0 / p.dispersion, size=mu.shape, dtype=np.float32) * p.dispersion
    counts = rng.poisson(mu * gamma).astype(np.float32)
    names, lineage = np.asarray(world["type_names"]), np.asarray(world["lineage_names"])
    obs = pd.DataFrame(
        {
            "dataset_id": ds["id"],
            "assay": ds["assay"],
            "cell_type": names[k],
            "lineage": lineage[k],
            "cell_state": [f"{t} {_STATES[s % len(_STATES)]}" for t, s in zip(names[k], state, strict=True)],
            "tissue": ds["tissue"],
            "tissue_general": ds["tissue_general"],
            "donor_id": [f"{ds['id'][:8]}-donor{j}" for j in donor],
            "organism": organism,
            "is_primary_data": ds["primary"],
            "suspension_type": ds["suspension"],
        }
    )
    return (counts, obs, activity) if with_activity else (counts, obs)
