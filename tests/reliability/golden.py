"""Golden outputs: a small corpus built in both formats (and through the SOMA path), and the first batches
of an epoch under every loader mode, reduced to sha256 digests.

``python -m tests.reliability.golden --record [CASE ...]`` writes ``golden.json`` (beside this file) from the code
as it is; the golden test rebuilds everything and compares. A refactor or a speed change must not
move a single digest: shards are byte-identical and batches bit-identical. (A pinned dependency
upgrade that changes bytes, e.g. Parquet's ``created_by``, shows up here too: re-record only after
reading why.)
"""

from __future__ import annotations

import hashlib
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

GOLDEN = Path(__file__).with_name("golden.json")
SYNTH = {"cells": 1200, "genes": 800, "datasets": 3, "files": 2, "seed": 21}
BUILD = {"cells_per_shard": 300, "seed": 4, "quiet": True, "unit_cells": 512, "block_cells": 256, "val_fraction": 0.3}


def _tree(root: Path, tmp: Path) -> dict[str, str]:
    """sha256 of every file of a shard set. The manifest is hashed without ``created_at`` and ``checksum``
    and with the temporary directory's path replaced (it records where the inputs were)."""
    out = {}
    for p in sorted(root.rglob("*")):
        if not p.is_file():
            continue
        rel = p.relative_to(root).as_posix()
        if rel == "index.json":
            manifest = {k: v for k, v in json.loads(p.read_text()).items() if k not in ("created_at", "checksum")}
            text = json.dumps(manifest, sort_keys=True).replace(str(tmp), "TMP")
            out[rel] = hashlib.sha256(text.encode()).hexdigest()
        else:
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def build_sets(tmp: Path) -> dict[str, Path]:
    """The golden corpus as h5ad, a Census-shaped SOMA copy of it, and its shard sets."""
    from ingest import BuildOptions, SynthSpec, build, synthesize
    from ingest.census_copy import write_census_copy

    files = [p for p, _ in synthesize(SynthSpec(**SYNTH), tmp / "corpus" / "g.h5ad")]
    sets = {}
    for fmt in ("zarr", "webdataset"):
        sets[fmt] = tmp / fmt
        build(BuildOptions(input=[str(p) for p in files], out=str(sets[fmt]), format=fmt, **BUILD))
    write_census_copy(files, tmp / "census", version="2025-01-30")
    sets["census-zarr"] = tmp / "census-zarr"
    build(
        BuildOptions(
            census_version="2025-01-30",
            census_uri=str(tmp / "census"),
            out=str(sets["census-zarr"]),
            format="zarr",
            obs_filter="is_primary_data == True",
            **BUILD,
        )
    )
    return sets


def _digest(batch: dict[str, Any]) -> str:
    h = hashlib.sha256()
    for key in sorted(batch):
        value = batch[key]
        h.update(key.encode())
        if key == "cell_id":
            h.update("\n".join(value).encode())
        else:
            a = value.numpy()
            h.update(str(a.dtype).encode() + str(a.shape).encode())
            h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def loader_cases(sets: dict[str, Path]) -> dict[str, tuple[Any, dict[str, Any]]]:
    """(path, options) of every loader mode whose batches are recorded."""
    z, w = str(sets["zarr"]), str(sets["webdataset"])
    base = {"batch_size": 16, "context_length": 64, "seed": 5, "return_cell_ids": True}
    return {
        "zarr-plain": (z, base),
        "wds-plain": (w, base),
        "zarr-val-pad": (z, {**base, "split": "val", "remainder": "pad", "lanes": 2, "lane_cells": 32}),
        "zarr-rank1of2": (z, {**base, "rank": 1, "world_size": 2}),
        "zarr-balance": (z, {**base, "balance_tokens": True, "balance_chunk": 8}),
        "zarr-budget": (z, {**base, "token_budget": 700}),
        "wds-bins": (w, {**base, "value_bins": 11, "context_length": 300}),
        "zarr-mix": (
            [{"path": z, "weight": 0.7, "name": "a"}, {"path": w, "weight": 0.3, "name": "b"}],
            {**base, "num_samples": 500},
        ),
        "zarr-weighted-replacement": (
            z,
            {**base, "replacement": True, "weighting": {"column": "cell_type", "smoothing": 10}},
        ),
        "zarr-choose-curriculum": (
            [{"path": z, "choose": 300}],
            {**base, "weighting": {"column": "cell_type", "curriculum_epochs": 2}},
        ),
        "zarr-grouped": (z, {**base, "group_by": "dataset_id", "remainder": "pad"}),  # bounded (the default)
        "zarr-grouped-exact": (z, {**base, "group_by": "dataset_id", "group_exact": True, "remainder": "pad"}),
        "zarr-panels-random": (z, {**base, "panels": {"random_genes": 40}}),
        "census-plain": (str(sets["census-zarr"]), base),
        "zarr-packed": (z, {**base, "context_length": 300, "pack": True, "value_bins": 11}),
    }


def batch_digests(sets: dict[str, Path], batches: int = 5, only: list[str] | None = None) -> dict[str, list[str]]:
    """The first ``batches`` batches of epochs 0 and 1 of every case (``only``: of these), in process
    (world and workers as given)."""
    from shards import ShardedCellDataset

    out = {}
    cases = loader_cases(sets)
    unknown = sorted(set(only or ()) - set(cases))
    if unknown:
        raise SystemExit(f"no loader case {', '.join(unknown)}; the cases: {', '.join(cases)}")
    for name, (path, options) in cases.items():
        if only and name not in only:
            continue
        opts = {"rank": 0, "world_size": 1, **options}
        ds = ShardedCellDataset(path, **opts)
        digests = []
        for epoch in (0, 1):
            ds.set_epoch(epoch)
            for k, batch in enumerate(ds):
                if k >= batches:
                    break
                digests.append(_digest(batch))
        out[name] = digests
    return out


def record(tmp: Path) -> dict[str, Any]:
    sets = build_sets(tmp)
    return {
        "synth": SYNTH,
        "build": BUILD,
        "files": {name: _tree(root, tmp) for name, root in sets.items()},
        "batches": batch_digests(sets),
    }


USAGE = (
    "usage: python -m tests.reliability.golden --record [CASE ...]\n"
    "  --record         rewrite golden.json from the current code (every build and loader case)\n"
    "  --record CASE..  record only these loader cases' batch digests (a new case), keeping the rest"
)

if __name__ == "__main__":
    if sys.argv[1:2] != ["--record"]:
        sys.exit(USAGE)
    only = sys.argv[2:]
    with tempfile.TemporaryDirectory() as tmp:
        if only:
            golden = json.loads(GOLDEN.read_text())
            golden["batches"].update(batch_digests(build_sets(Path(tmp)), only=only))
        else:
            golden = record(Path(tmp))
        GOLDEN.write_text(json.dumps(golden, indent=1, sort_keys=True) + "\n")
    print(f"wrote {GOLDEN}" + (f" (cases {', '.join(only)})" if only else ""))
