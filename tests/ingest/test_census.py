"""Ingest from the Census and from any SOMA experiment, on a Census-shaped TileDB-SOMA copy on disk.

The copy is written from the synthetic corpus (three files with different gene panels, six datasets, one
of them not primary data), so every check has an independent reference: the h5ad files themselves and the
h5ad code path. The only stand-in is the Census release directory, a web service, served from local JSON
by a real HTTP server.
"""

from __future__ import annotations

import http.server
import json
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import scipy.sparse as sp
import tiledbsoma as soma
import tiledbsoma.io

from ingest import SynthSpec, synthesize
from ingest.census_copy import write_census_copy
from shards.loading.readers import ShardSetReader
from tests.conftest import manifest_without_time, run_cli, small_build

VERSION = "2025-01-30"


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> list[Path]:
    out = tmp_path_factory.mktemp("census-corpus") / "syn.h5ad"
    return [p for p, _ in synthesize(SynthSpec(cells=2400, genes=1200, datasets=6, files=3, seed=5), out)]


@pytest.fixture(scope="module")
def census(files, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("census") / "soma"
    write_census_copy(files, root, version=VERSION)
    return root


@pytest.fixture(scope="module")
def obs(files) -> pd.DataFrame:
    """The corpus's obs in joinid order (the copy keeps the files' order), with file and obs name."""
    frames = []
    for p in files:
        a = ad.read_h5ad(p, backed="r")
        frame = a.obs.reset_index(names="obs_name")
        frame["file"] = p.stem
        frames.append(frame)
        a.file.close()
    return pd.concat(frames, ignore_index=True)


def _census_cmd(census: Path, out: Path, *extra: str) -> list[str]:
    return [
        "build",
        "--census-version",
        VERSION,
        "--census-uri",
        str(census),
        "--out",
        str(out),
        "--cells-per-shard",
        "500",
        "--unit-cells",
        "1024",
        "--block-cells",
        "512",
        "--seed",
        "3",
        "--quiet",
        *extra,
    ]


def _readers(path: Path) -> list[ShardSetReader]:
    splits = manifest_without_time(path)["splits"]
    return [ShardSetReader(path, name) for name, s in splits.items() if s["n_cells"]]


def _metadata(path: Path) -> pd.DataFrame:
    """Every cell's metadata, with its split."""
    frames = [r.metadata(i).assign(split=r.split) for r in _readers(path) for i in range(len(r.shards))]
    return pd.concat(frames, ignore_index=True)


def _records(path: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """cell_id -> (genes, counts) over every shard of a set."""
    out = {}
    for reader in _readers(path):
        for i in range(len(reader.shards)):
            genes, counts, offsets, _ = reader.read(i, 0, int(reader.shard_cells[i]))
            for k, cell in enumerate(reader.metadata(i)["cell_id"]):
                lo, hi = offsets[k], offsets[k + 1]
                out[cell] = (genes[lo:hi].copy(), counts[lo:hi].copy())
    return out


def test_census_without_filter_equals_the_h5ad_path(files, census, tmp_path):
    """Same cells in the same order: vocabulary, medians and every token array are byte-identical."""
    res = run_cli(*_census_cmd(census, tmp_path / "census"))
    assert res.returncode == 0, res.stderr
    small_build(files, tmp_path / "h5ad", cells_per_shard=500)
    for name in ("vocab.csv", "gene_medians.csv"):
        assert (tmp_path / "census" / name).read_bytes() == (tmp_path / "h5ad" / name).read_bytes()
    a, h = manifest_without_time(tmp_path / "census"), manifest_without_time(tmp_path / "h5ad")
    assert a["n_cells"] == h["n_cells"] == 2400
    assert [s["n_tokens"] for s in a["shards"]] == [s["n_tokens"] for s in h["shards"]]
    for sa, sh in zip(a["shards"], h["shards"], strict=True):
        for arr in ("genes", "counts", "offsets"):
            za = (tmp_path / "census" / sa["path"] / arr / "c" / "0").read_bytes()
            assert za == (tmp_path / "h5ad" / sh["path"] / arr / "c" / "0").read_bytes()


@pytest.fixture(scope="module")
def primary(census, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("primary") / "set"
    res = run_cli(*_census_cmd(census, out, "--obs-filter", "is_primary_data == True", "--val-fraction", "0.3"))
    assert res.returncode == 0, res.stderr
    return out


def test_filter_count_metadata_and_cell_ids(primary, obs):
    m = manifest_without_time(primary)
    expected = obs.index[obs["is_primary_data"].astype(bool)]
    assert 0 < len(expected) < len(obs), "the corpus must mix primary and non-primary cells"
    assert m["n_cells"] == m["source"]["cells_matched"] == len(expected)
    src = m["source"]
    assert src["kind"] == "census" and src["census_version"] == src["resolved_version"] == VERSION
    assert src["obs_filter"] == "is_primary_data == True" and src["organism"] == "homo_sapiens"
    meta = _metadata(primary)
    assert set(meta["split"]) == {"train", "val"}
    joinids = meta["cell_id"].str.removeprefix(f"census:{VERSION}:").astype(int)
    assert sorted(joinids) == list(expected)
    ref = obs.loc[joinids.to_numpy()]
    for col in ("dataset_id", "cell_type", "tissue", "tissue_general", "donor_id", "assay", "suspension_type"):
        assert (meta[col].to_numpy() == ref[col].astype(str).to_numpy()).all(), col
    assert (meta["organism"] == "Homo sapiens").all()
    assert (meta["disease"] == "unknown").all()  # a default Census column the corpus leaves unknown
    # a donor is wholly in one split, as with h5ad inputs
    assert (meta.groupby("donor_id")["split"].nunique() == 1).all()


def test_tokens_equal_the_h5ad_path_on_the_same_cells(primary, files, tmp_path, obs):
    h5ad = tmp_path / "h5ad"
    small_build(files, h5ad, vocab=str(primary / "vocab.csv"), gene_medians=str(primary / "gene_medians.csv"))
    ours, theirs = _records(primary), _records(h5ad)
    assert len(ours) < len(theirs)
    for cell, (genes, counts) in ours.items():
        row = obs.loc[int(cell.rsplit(":", 1)[1])]
        g, c = theirs[f"{row['file']}:{row['obs_name']}"]
        np.testing.assert_array_equal(genes, g)
        np.testing.assert_array_equal(counts, c)


def test_presence_sidecar_names_measured_genes_per_dataset(primary, files, obs):
    m = manifest_without_time(primary)
    table = pq.read_table(primary / "presence.parquet").to_pandas()
    assert m["presence"]["n_pairs"] == len(table)
    vocab = pd.read_csv(primary / "vocab.csv")
    token_of = dict(zip(vocab["gene_id"], vocab["token"], strict=True))
    kept = set(m["stats"]["datasets"])
    assert set(table["dataset_id"].astype(str)) == kept
    non_primary = set(obs.loc[~obs["is_primary_data"].astype(bool), "dataset_id"].astype(str))
    assert non_primary and not (non_primary & kept)
    for path in files:
        a = ad.read_h5ad(path, backed="r")
        panel = {token_of[g] for g in a.var.index}
        for d in set(a.obs["dataset_id"].astype(str)) & kept:
            assert set(table.loc[table["dataset_id"] == d, "token"]) == panel
        a.file.close()
    # unmeasured is not zero: some gene of the vocabulary is absent from some dataset's panel
    assert table.groupby("dataset_id")["token"].count().min() < len(vocab) - 4


def test_workers_and_interruption_give_the_same_shards(census, primary, tmp_path):
    cmd = _census_cmd(census, tmp_path / "w2", "--obs-filter", "is_primary_data == True", "--val-fraction", "0.3")
    res = run_cli(*cmd, "--workers", "2")
    assert res.returncode == 0, res.stderr
    assert manifest_without_time(tmp_path / "w2") == manifest_without_time(primary)
    out = tmp_path / "resumed"
    cmd = _census_cmd(census, out, "--obs-filter", "is_primary_data == True", "--val-fraction", "0.3")
    killed = run_cli(*cmd, env={"CELLSHARD_TEST_FAULT": "pass2:1"})
    assert killed.returncode == -9 and not (out / "index.json").exists()
    assert (out / ".cellshard-work" / "obs_joinids.i64").exists()
    assert run_cli(*cmd).returncode == 0
    assert manifest_without_time(out) == manifest_without_time(primary)
    assert run_cli("verify", str(out)).returncode == 0


def test_var_filter_and_soma_uri(census, obs, tmp_path):
    exp = census / "census_data" / "homo_sapiens"
    with soma.open(str(exp)) as e:
        var = e.ms["RNA"].var.read().concat().to_pandas()
    keep = var["feature_id"].iloc[::2].tolist()
    out = tmp_path / "soma"
    filt = "feature_id in [" + ", ".join(repr(g) for g in keep) + "]"
    res = run_cli(
        "build",
        "--soma-uri",
        str(exp),
        "--out",
        str(out),
        "--var-filter",
        filt,
        "--obs-columns",
        "sex",
        "--quiet",
        "--obs-filter",
        "tissue_general == 'blood'",
    )
    assert res.returncode == 0, res.stderr
    m = manifest_without_time(out)
    assert m["source"]["kind"] == "soma" and m["source"]["var_filter"] == filt
    assert m["n_cells"] == int((obs["tissue_general"] == "blood").sum())
    vocab = pd.read_csv(out / "vocab.csv")
    genes = vocab.loc[~vocab["gene_id"].str.startswith("<"), "gene_id"]
    assert set(genes) == set(keep)
    assert m["counters"]["dropped_genes"]["var_filter"] == len(var) - len(keep)
    meta = ShardSetReader(out).metadata(0)
    assert meta["cell_id"].str.startswith("homo_sapiens:").all()
    assert "sex" in meta.columns and "tissue_general" not in meta.columns


# -- the release directory, served from local JSON -------------------------------------------------
@contextmanager
def _serve(docs: dict[str, bytes], hang: bool = False):
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            if hang:
                time.sleep(30)
                return
            body = docs.get(self.path)
            self.send_response(200 if body is not None else 404)
            self.end_headers()
            self.wfile.write(body or b"")

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _directory(census: Path) -> dict[str, bytes]:
    """``release.json`` and ``mirrors.json`` as the Census publishes them, with a mirror on local disk."""
    release = {
        "stable": "V7",
        "latest": VERSION,
        "V7": "2024-07-01",
        "2024-07-01": {
            "release_build": "2024-07-01",
            "soma": {"relative_uri": "/nowhere/soma/"},
            "flags": {"lts": True},
        },
        VERSION: {"release_build": VERSION, "soma": {"relative_uri": f"{census.as_posix()}/"}, "flags": {"lts": False}},
    }  # relative URIs are paths from the mirror's root, as in the Census's own directory
    mirrors = {"default": "local", "local": {"provider": "file", "base_uri": "file:///", "region": None}}
    return {"/release.json": json.dumps(release).encode(), "/mirrors.json": json.dumps(mirrors).encode()}


def _env(url: str) -> dict[str, str]:
    return {
        "CELLSHARD_CENSUS_RELEASE_URL": f"{url}/release.json",
        "CELLSHARD_CENSUS_MIRRORS_URL": f"{url}/mirrors.json",
    }


def test_alias_resolves_through_the_release_directory(census, tmp_path):
    with _serve(_directory(census)) as url:
        out = tmp_path / "latest"
        res = run_cli(
            "build",
            "--census-version",
            "latest",
            "--organism",
            "Homo sapiens",
            "--out",
            str(out),
            "--quiet",
            "--obs-filter",
            "tissue_general == 'blood'",
            env=_env(url),
        )
        assert res.returncode == 0, res.stderr
        src = manifest_without_time(out)["source"]
        assert src["census_version"] == "latest" and src["resolved_version"] == VERSION
        assert src["census_uri"] is None and src["uri"].startswith("file://")
        assert ShardSetReader(out).metadata(0)["cell_id"].str.startswith(f"census:{VERSION}:").all()
        # an alias with a local copy is checked against the copy's build date
        cmd = _census_cmd(census, tmp_path / "pinned")
        cmd[cmd.index(VERSION)] = "latest"
        res = run_cli(*cmd, env=_env(url))
        assert res.returncode == 0, res.stderr
        assert manifest_without_time(tmp_path / "pinned")["source"]["resolved_version"] == VERSION
        stale = run_cli(
            "build",
            "--census-version",
            "stable",
            "--census-uri",
            str(census),
            "--out",
            str(tmp_path / "bad"),
            env=_env(url),
        )
        assert stale.returncode == 1 and "2024-07-01" in stale.stderr and VERSION in stale.stderr
        assert not (tmp_path / "bad").exists()
        unknown = run_cli("build", "--census-version", "2023-01-01", "--out", str(tmp_path / "u"), env=_env(url))
        assert unknown.returncode == 1 and "not a Census release" in unknown.stderr and "latest" in unknown.stderr


def test_unreachable_or_silent_release_directory_fails_fast(tmp_path):
    closed = run_cli(
        "build", "--census-version", "stable", "--out", str(tmp_path / "o"), env=_env("http://127.0.0.1:9")
    )
    assert closed.returncode == 1
    assert "could not be reached" in closed.stderr and "--census-uri" in closed.stderr
    with _serve({}, hang=True) as url:
        t0 = time.monotonic()
        silent = run_cli(
            "build", "--census-version", VERSION, "--census-timeout", "2", "--out", str(tmp_path / "o"), env=_env(url)
        )
        elapsed = time.monotonic() - t0
    assert silent.returncode == 1 and "did not answer within 2 s" in silent.stderr, silent.stderr
    assert f"--census-version {VERSION}" in silent.stderr and elapsed < 20
    assert not (tmp_path / "o").exists()


def _fractional_experiment(path: Path) -> Path:
    X = sp.csr_matrix(np.array([[1.0, 0.0, 2.0], [0.0, 0.5, 1.0]], dtype=np.float32))
    obs = pd.DataFrame({"donor_id": ["a", "b"]}, index=["c0", "c1"])
    var = pd.DataFrame({"feature_id": ["ENSG1", "ENSG2", "ENSG3"]}, index=["ENSG1", "ENSG2", "ENSG3"])
    tiledbsoma.io.from_anndata(str(path), ad.AnnData(X=X, obs=obs, var=var), measurement_name="RNA", X_layer_name="raw")
    return path


@pytest.mark.parametrize(
    ("args", "culprit"),
    [
        (["--organism", "danio_rerio"], "--organism 'danio_rerio'"),
        (["--obs-filter", "tissue_general == 'no such tissue'"], "matches no cell"),
        (["--obs-filter", "is_primary_data == True and"], "--obs-filter"),
        (["--obs-filter", "no_such_column == 1"], "no_such_column"),
        (["--var-filter", "feature_id == 'ENSG_NONE'"], "--var-filter"),
        (["--obs-columns", "cell_type", "no_such_column"], "--obs-columns 'no_such_column'"),
        (["--x-layer", "normalized"], "no X layer 'normalized'"),
        (["--census-version", "2024-07-01"], "built on 2025-01-30"),
        (["--soma-uri", "SELF"], "not an Experiment"),
        (["--input", "FILE"], "give exactly one source"),
        (["--use-raw"], "--layer and --use-raw apply to h5ad inputs"),
    ],
)
def test_bad_census_input_is_a_clear_error(args, culprit, census, tmp_path):
    args = [str(census) if a == "SELF" else str(census.parent / "x.h5ad") if a == "FILE" else a for a in args]
    base = _census_cmd(census, tmp_path / "out")
    if "--soma-uri" in args:
        base = [a for a in base if a not in ("--census-version", VERSION, "--census-uri", str(census))]
    if "--census-version" in args:
        i = base.index("--census-version")
        base = base[:i] + base[i + 2 :]
    res = run_cli(*base, *args)
    assert res.returncode == 1, res.stderr
    assert culprit in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("kind", ["not-soma", "fractional"])
def test_bad_soma_uris(kind, files, tmp_path):
    if kind == "not-soma":
        res = run_cli("build", "--census-version", VERSION, "--census-uri", str(files[0]), "--out", str(tmp_path / "o"))
        assert res.returncode == 1 and "not a SOMA collection" in res.stderr
    else:
        exp = _fractional_experiment(tmp_path / "exp")
        res = run_cli("build", "--soma-uri", str(exp), "--out", str(tmp_path / "o"), "--quiet")
        assert res.returncode == 1 and "not integer counts (0.5" in res.stderr and "exp:1" in res.stderr
    assert not (tmp_path / "o" / "index.json").exists()


def test_dry_run_counts_and_writes_nothing(census, obs, tmp_path):
    """``--census-uri`` alone takes the copy's build date as the release; ``--dry-run`` only counts."""
    out = tmp_path / "plan"
    res = run_cli(
        "build", "--census-uri", str(census), "--obs-filter", "is_primary_data == False", "--out", str(out), "--dry-run"
    )
    assert res.returncode == 0, res.stderr
    plan = json.loads(res.stdout)
    assert plan["cells_matched"] == int((~obs["is_primary_data"].astype(bool)).sum()) > 0
    assert plan["source"]["census_version"] == plan["source"]["resolved_version"] == VERSION
    assert plan["genes"] == 1200 and not out.exists()
    # the split check runs in the dry run too, on every matched cell's key (the build repeats it on the
    # cells with counts after its first pass): a split by donor of a few donors fails here, not later
    few = ["build", "--census-uri", str(census), "--out", str(out), "--split-by", "donor_id"]
    res = run_cli(*few, "--val-fraction", "0.002", "--dry-run")
    assert res.returncode == 1 and "--split-by donor_id sends" in res.stderr and not out.exists(), res.stderr
    assert "Traceback" not in res.stderr


@pytest.mark.slow
def test_census_copy_on_s3_equals_the_local_copy(census, tmp_path):
    """``--census-uri s3://...`` through TileDB's S3 client against moto's S3 server on 127.0.0.1."""
    import socket

    import s3fs
    from moto.server import ThreadedMotoServer

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    keys = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}
    try:
        fs = s3fs.S3FileSystem(key="test", secret="test", client_kwargs={"endpoint_url": f"http://127.0.0.1:{port}"})
        fs.mkdir("mirror")
        fs.put(str(census), "mirror/2025-01-30/soma", recursive=True)
        settings = [
            f"vfs.s3.endpoint_override=127.0.0.1:{port}",
            "vfs.s3.scheme=http",
            "vfs.s3.use_virtual_addressing=false",
            "vfs.s3.no_sign_request=false",
            "vfs.s3.region=us-east-1",
        ]
        uri = "s3://mirror/2025-01-30/soma"
        remote = [a if a != str(census) else uri for a in _census_cmd(census, tmp_path / "s3")]
        res = run_cli(*remote, "--tiledb-config", *settings, "--workers", "2", env=keys)
        assert res.returncode == 0, res.stderr
    finally:
        server.stop()
    local = run_cli(*_census_cmd(census, tmp_path / "local"))
    assert local.returncode == 0, local.stderr
    a, b = manifest_without_time(tmp_path / "s3"), manifest_without_time(tmp_path / "local")
    assert a["source"]["uri"].startswith("s3://mirror/") and a["build_id"] == b["build_id"]
    assert a["shards"] == b["shards"] and a["presence"] == b["presence"]


def test_tiledb_settings_are_parsed_and_never_recorded():
    from ingest import BuildOptions, IngestError

    opts = BuildOptions(out="x", soma_uri="s3://b/e", tiledb_config=["vfs.s3.aws_secret_access_key=s3cr3t", "a.b=1"])
    assert opts.tiledb_settings() == {"vfs.s3.aws_secret_access_key": "s3cr3t", "a.b": "1"}
    assert "s3cr3t" not in json.dumps(opts.redacted())
    with pytest.raises(IngestError, match=r"--tiledb-config 'vfs.s3.region': expected KEY=VALUE"):
        BuildOptions(out="x", soma_uri="s3://b/e", tiledb_config=["vfs.s3.region"]).validate()
