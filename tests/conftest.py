"""Shared fixtures: small synthetic corpora and builds, made once per session with the real code."""

from __future__ import annotations

import functools
import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from ingest import BuildOptions, SynthSpec, build, synthesize

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> list[Path]:
    out = tmp_path_factory.mktemp("corpus") / "syn.h5ad"
    written = synthesize(SynthSpec(cells=3000, genes=1500, datasets=3, files=2, seed=11), out)
    return [p for p, _ in written]


def small_build(inputs, out, **kw) -> dict:
    opts = {"cells_per_shard": 700, "seed": 3, "quiet": True, "unit_cells": 1024, "block_cells": 512}
    opts.update(kw)
    return build(BuildOptions(input=[str(p) for p in inputs], out=str(out), **opts))


@pytest.fixture(scope="session")
def zarr_set(corpus, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("zarr") / "set"
    small_build(corpus, out, format="zarr", val_fraction=0.3)
    return out


@pytest.fixture(scope="session")
def wds_set(corpus, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wds") / "set"
    small_build(corpus, out, format="webdataset", val_fraction=0.3)
    return out


def run_cli(*args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """``python -m ingest ...`` in a fresh process, as a user would run it."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "ingest", *args], capture_output=True, text=True, env=full_env, timeout=timeout, cwd=ROOT
    )


def write_h5ad(path: Path, X, *, var_index=None, obs=None, var=None, raw=None, layers=None) -> Path:
    """A small hand-made h5ad, written by anndata itself."""
    X = sp.csr_matrix(X) if not sp.issparse(X) else X
    n, g = X.shape
    var = var if var is not None else pd.DataFrame(index=var_index or [f"ENSG{i:011d}" for i in range(g)])
    obs = (
        obs
        if obs is not None
        else pd.DataFrame(
            {"dataset_id": "ds1", "donor_id": [f"d{i % 3}" for i in range(n)]}, index=[f"cell{i}" for i in range(n)]
        )
    )
    adata = ad.AnnData(X=X, obs=obs, var=var, layers=layers or {})
    if raw is not None:
        adata.raw = ad.AnnData(X=sp.csr_matrix(raw), obs=obs, var=var)
    adata.write_h5ad(path)
    return path


def manifest_without_time(directory: Path) -> dict:
    m = json.loads((directory / "index.json").read_text())
    m.pop("created_at", None)
    return m


def reference_tokens(counts: np.ndarray, tokens: np.ndarray, medians: np.ndarray) -> np.ndarray:
    """Geneformer's order for one cell, written the slow, obvious way (the test oracle)."""
    items = [(-(c / m), t) for c, t, m in zip(counts, tokens, medians, strict=True) if c > 0 and not np.isnan(m)]
    return np.array([t for _, t in sorted(items)], dtype=np.int64)


_RANGE = re.compile(r"bytes=(\d*)-(\d*)")


class RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Python's file server plus HTTP Range requests (fsspec needs them); can fail the first requests."""

    fail_first = 0
    failures = 0

    def log_message(self, *args):  # keep test output clean
        pass

    def do_GET(self):
        cls = type(self)
        if cls.failures < cls.fail_first:
            cls.failures += 1
            self.send_error(503, "try again")
            return
        match = _RANGE.fullmatch(self.headers.get("Range", ""))
        path = Path(self.translate_path(self.path))
        if not match or not path.is_file():
            return super().do_GET()
        size = path.stat().st_size
        a, b = match.groups()
        start, end = (size - int(b), size - 1) if a == "" else (int(a), min(int(b) if b else size - 1, size - 1))
        with open(path, "rb") as fh:
            fh.seek(start)
            data = fh.read(end - start + 1)
        self.send_response(206)
        self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def http_root(tmp_path_factory, zarr_set, wds_set):
    root = tmp_path_factory.mktemp("www")
    shutil.copytree(zarr_set, root / "zarr")
    shutil.copytree(wds_set, root / "wds")
    handler = type("H", (RangeHandler,), {"fail_first": 0, "failures": 0})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", root, handler
    server.shutdown()
