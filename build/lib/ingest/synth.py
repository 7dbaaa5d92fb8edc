"""A synthetic, Census-like corpus: learnable structure, realistic sparsity, any size.

Counts are negative-binomial (gamma-Poisson) around gene-specific means. Each cell type switches on an
expression programme of its own (so a model has something to learn), each dataset measures its own gene
panel (unmeasured genes are absent from its file, as in CELLxGENE), and donors are nested in datasets
with their own library-size effects. With the defaults a cell has a median of ~1,650 detected genes
(range ~300-4,500), as Census cells do. Cells are generated and written in chunks, so the corpus can be
far larger than memory; every draw comes from ``numpy.random.default_rng`` keyed on (seed, chunk).
"""

from __future__ import annotations

import uuid
from pathlib import Path

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import scipy.sparse as sp

from shards.storage.atomic import atomic_file

from .synth_atlas import ATLAS, atlas_cells, atlas_world
from .synth_spec import _CELL_TYPES, _ORGANISMS, SynthSpec

__all__ = ["SynthSpec", "synthesize"]  # SynthSpec lives in synth_spec (no numpy/pandas: --help)

_TISSUES = (
    ("blood", "blood"),
    ("lung", "lung"),
    ("liver", "liver"),
    ("cerebral cortex", "brain"),
    ("kidney", "kidney"),
    ("heart left ventricle", "heart"),
    ("skin of body", "skin"),
    ("colonic mucosa", "large intestine"),
)
_ASSAYS = ("10x 3' v3", "10x 3' v2", "10x 5' v1", "Smart-seq2")
_DISPERSION = 0.3  # NB overdispersion phi: variance = mu + phi * mu**2


def _world(spec: SynthSpec) -> dict:
    """Gene means, cell-type programmes, dataset panels and donors: everything but the cells."""
    rng = np.random.default_rng([spec.seed, 0])
    g = spec.genes
    log_mean = rng.normal(-2.0, 2.0, g)
    programs = np.zeros((spec.cell_types, g))
    for k in range(spec.cell_types):
        up = rng.choice(g, size=max(1, g // 20), replace=False)
        programs[k, up] = rng.normal(2.0, 0.6, up.size)
        down = rng.choice(g, size=max(1, g // 40), replace=False)
        programs[k, down] -= rng.normal(1.5, 0.4, down.size)
    props = rng.dirichlet(np.full(spec.datasets, 2.0))
    n_per = np.floor(props * spec.cells).astype(int)
    n_per[: spec.cells - n_per.sum()] += 1
    datasets = []
    for d in range(spec.datasets):
        panel = np.sort(rng.choice(g, size=int(g * rng.uniform(0.7, 0.95)), replace=False))
        tissue, tissue_general = _TISSUES[rng.integers(len(_TISSUES))]
        datasets.append(
            {
                "id": str(uuid.UUID(bytes=rng.bytes(16), version=4)),
                "n": int(n_per[d]),
                "panel": panel,
                "assay": _ASSAYS[rng.integers(len(_ASSAYS))],
                "tissue": tissue,
                "tissue_general": tissue_general,
                "suspension": "nucleus" if rng.random() < 0.25 else "cell",
                "depth": float(np.exp(rng.normal(0.0, 0.25))),
                "types": rng.dirichlet(np.full(spec.cell_types, 0.8)),
                "donors": [float(np.exp(rng.normal(0.0, 0.2))) for _ in range(int(rng.integers(2, 7)))],
                "primary": bool(rng.random() > 0.1),
            }
        )
    return {"log_mean": log_mean, "programs": programs, "datasets": datasets}


def _gene_table(spec: SynthSpec) -> pd.DataFrame:
    _, prefix, case = _ORGANISMS[spec.organism]
    ids = [f"{prefix}{i + 1:011d}" for i in range(spec.genes)]
    names = [case(f"SYN{i + 1}") for i in range(spec.genes)]
    return pd.DataFrame({"feature_name": names}, index=pd.Index(ids, name="gene_id"))


def _cells(spec: SynthSpec, world: dict, d: int, n: int, chunk: int, panel: np.ndarray):
    """Counts (CSR over the panel's columns) and obs rows for ``n`` cells of dataset ``d``."""
    if spec.profile == "atlas":
        counts, obs = atlas_cells(spec.seed, world, d, n, chunk, panel, _ORGANISMS[spec.organism][0])
        return sp.csr_matrix(counts), obs
    ds = world["datasets"][d]
    rng = np.random.default_rng([spec.seed, 1, d, chunk])
    types = rng.choice(spec.cell_types, size=n, p=ds["types"])
    donors = rng.integers(len(ds["donors"]), size=n)
    depth = np.exp(rng.normal(np.log(7_500.0), 0.65, n)) * ds["depth"] * np.asarray(ds["donors"])[donors]
    logit = world["log_mean"][panel][None, :] + world["programs"][types][:, panel]
    p = np.exp(logit - logit.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    mu = p * depth[:, None]
    gamma = rng.standard_gamma(1.0 / _DISPERSION, size=mu.shape, dtype=np.float32) * _DISPERSION
    counts = rng.poisson(mu * gamma).astype(np.float32)
    organism = _ORGANISMS[spec.organism][0]
    obs = pd.DataFrame(
        {
            "dataset_id": ds["id"],
            "assay": ds["assay"],
            "cell_type": np.asarray(_CELL_TYPES)[types],
            "tissue": ds["tissue"],
            "tissue_general": ds["tissue_general"],
            "donor_id": [f"{ds['id'][:8]}-donor{j}" for j in donors],
            "organism": organism,
            "is_primary_data": ds["primary"],
            "suspension_type": ds["suspension"],
        }
    )
    return sp.csr_matrix(counts), obs


def _normalize(csr: sp.csr_matrix) -> sp.csr_matrix:
    totals = np.asarray(csr.sum(axis=1)).ravel()
    out = sp.csr_matrix(sp.diags(1e4 / np.maximum(totals, 1)) @ csr)
    out.data = np.log1p(out.data).astype(np.float32)
    return out


def _write_file(path: Path, spec: SynthSpec, world: dict, members: list[int], genes: pd.DataFrame) -> int:
    rng = np.random.default_rng([spec.seed, 2, members[0]])
    union = np.unique(np.concatenate([world["datasets"][d]["panel"] for d in members]))
    columns = rng.permutation(union)  # a file's var is in no particular order, as in the wild
    var = genes.iloc[columns].copy()
    position = np.full(spec.genes, -1)
    position[columns] = np.arange(columns.size)
    obs_parts, written = [], 0
    with atomic_file(path) as tmp, h5py.File(tmp, "w") as f:
        f.attrs["encoding-type"] = "anndata"
        f.attrs["encoding-version"] = "0.1.0"
        x_key = "raw/X" if spec.layout == "cellxgene" else "X"
        first = True
        for d in members:
            panel = world["datasets"][d]["panel"]
            n_d = world["datasets"][d]["n"]
            for chunk, start in enumerate(range(0, n_d, spec.chunk_cells)):
                n = min(spec.chunk_cells, n_d - start)
                counts, obs = _cells(spec, world, d, n, chunk, panel)
                coo = counts.tocoo()
                block = sp.csr_matrix((coo.data, (coo.row, position[panel][coo.col])), shape=(n, columns.size))
                block.sort_indices()
                parts = {x_key: block}
                if spec.layout == "cellxgene":
                    parts["X"] = _normalize(block)
                for key, mat in parts.items():
                    if first:
                        ad.io.write_elem(f, key, mat, dataset_kwargs={"compression": "lzf"})
                    else:
                        ad.io.sparse_dataset(f[key]).append(mat)
                first = False
                obs_parts.append(obs)
                written += n
        obs = pd.concat(obs_parts, ignore_index=True)
        obs.index = pd.Index([f"{path.stem}-cell{i:09d}" for i in range(len(obs))], name="obs_name")
        for col in obs.columns:
            if obs[col].dtype == object:
                obs[col] = obs[col].astype("category")
        ad.io.write_elem(f, "obs", obs)
        ad.io.write_elem(f, "var", var)
        if spec.layout == "cellxgene":
            f["raw"].attrs["encoding-type"] = "raw"
            f["raw"].attrs["encoding-version"] = "0.1.0"
            ad.io.write_elem(f, "raw/var", var)
            ad.io.write_elem(f, "raw/varm", {})
        for key in ("layers", "obsm", "varm", "obsp", "varp", "uns"):
            ad.io.write_elem(f, key, {})
    return written


def synthesize(spec: SynthSpec, out: Path) -> list[tuple[Path, int]]:
    """Write the corpus to ``out`` (one file) or ``<stem>-NNN.h5ad`` (``spec.files`` files)."""
    spec.validate()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atlas = spec.profile == "atlas"
    world = (
        atlas_world(spec.seed, spec.genes, spec.datasets, spec.cells, spec.atlas or ATLAS) if atlas else _world(spec)
    )
    genes = _gene_table(spec)
    written = []
    for i in range(spec.files):
        members = list(range(i, spec.datasets, spec.files))
        path = out if spec.files == 1 else out.with_name(f"{out.stem}-{i:03d}{out.suffix or '.h5ad'}")
        written.append((path, _write_file(path, spec, world, members, genes)))
    return written
