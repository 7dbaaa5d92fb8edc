"""Bad input, end to end: one table over the stages (ingest inputs and flags, shard sets, training
configs, checkpoints, the tools). Each row runs the real command (in this process, through the same
``main`` the console scripts call) and checks the exit code, that the one-line message names the
culprit, that no traceback is shown, and that nothing valid-looking was written: no ``index.json``,
no checkpoint or history, no embedding or export file."""

from __future__ import annotations

import json
import shutil
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from tests.conftest import ROOT, small_build, write_h5ad

G = 12
TINY = str(ROOT / "configs" / "train" / "tiny.yaml")
NOTHING = "run/checkpoints/*"  # a failed fit leaves no run files


@dataclass(frozen=True)
class Case:
    stage: str  # ingest | shards | train | embed | export
    args: list[str]
    culprit: str  # the message must contain this
    written: str | None = None  # a glob (relative to the case's tmp dir) that must match nothing afterwards
    code: int = 1
    env: dict[str, str] | None = None  # launcher variables, as torchrun would set them


class _Trap:
    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def _counts(n=30, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.poisson(2.0, size=(n, G)).astype(np.float32)
    X[:, 0] += 1
    return X


def _inputs(tmp: Path, zarr_set: Path) -> dict[str, Case]:
    X = _counts()
    good = write_h5ad(tmp / "good.h5ad", X)
    norm = np.log1p(X)
    norm[2, 3] = 0.5
    (tmp / "trunc.h5ad").write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    (tmp / "text.h5ad").write_text("hello")
    (tmp / "vocab.csv").write_text("gene_id,token\nENSMUSG1,5\n")
    neg, nan, frac = X.copy(), X.copy(), X.copy()
    neg[4, 2], nan[6, 1], frac[1, 1] = -1, np.nan, 1.5
    dup_var = pd.DataFrame(
        {"feature_id": ["ENSG1"] * 2 + [f"G{i}" for i in range(G - 2)]}, index=[f"s{i}" for i in range(G)]
    )
    small_build([good], tmp / "other", seed=99)
    (tmp / "a-file").write_text("x")
    (tmp / "not-empty").mkdir()
    (tmp / "not-empty" / "notes.txt").write_text("mine")
    edited = tmp / "edited-set"
    shutil.copytree(zarr_set, edited)
    doc = json.loads((edited / "index.json").read_text())
    doc["seed"] += 1
    (edited / "index.json").write_text(json.dumps(doc))
    holed = tmp / "holed-set"
    shutil.copytree(zarr_set, holed)
    shutil.rmtree(holed / "shard-000000.zarr")
    torch.save({"state_dict": {"w": torch.zeros(3)}}, tmp / "plain.pt")
    (tmp / "truncated.ckpt").write_bytes((tmp / "plain.pt").read_bytes()[:100])
    torch.save({"trap": _Trap(str(tmp / "pickle-ran"))}, tmp / "trap.ckpt")
    h5 = lambda name, data, **kw: str(write_h5ad(tmp / name, data, **kw))  # noqa: E731
    run = ["--trainer.default_root_dir", "run"]
    return {
        # -- ingest: inputs --------------------------------------------------------------------------
        "missing file": Case("ingest", ["--input", str(tmp / "nope.h5ad")], "nope.h5ad", "out/index.json"),
        "truncated h5ad": Case("ingest", ["--input", str(tmp / "trunc.h5ad")], "trunc.h5ad", "out/index.json"),
        "not hdf5": Case("ingest", ["--input", str(tmp / "text.h5ad")], "text.h5ad", "out/index.json"),
        "normalized X, raw present": Case(
            "ingest", ["--input", h5("norm.h5ad", norm, raw=X)], "--use-raw", "out/index.json"
        ),
        "non-integer counts": Case("ingest", ["--input", h5("frac.h5ad", frac)], "cell1", "out/index.json"),
        "negative counts": Case("ingest", ["--input", h5("neg.h5ad", neg)], "cell4", "out/index.json"),
        "nan counts": Case("ingest", ["--input", h5("nan.h5ad", nan)], "cell6", "out/index.json"),
        "duplicate gene ids": Case("ingest", ["--input", h5("dup.h5ad", X, var=dup_var)], "ENSG1", "out/index.json"),
        "no gene in the vocabulary": Case(
            "ingest", ["--input", str(good), "--vocab", str(tmp / "vocab.csv")], "no gene matches", "out/index.json"
        ),
        "bad medians file": Case(
            "ingest",
            ["--input", str(good), "--gene-medians", str(tmp / "vocab.csv")],
            "gene_id,median",
            "out/index.json",
        ),
        "empty glob": Case("ingest", ["--input", str(tmp / "*.loom")], "*.loom", "out/index.json"),
        # -- ingest: flags ---------------------------------------------------------------------------
        "missing id column": Case(
            "ingest", ["--input", str(good), "--gene-id-column", "ensembl"], "ensembl", "out/index.json"
        ),
        "missing layer": Case("ingest", ["--input", str(good), "--layer", "spliced"], "spliced", "out/index.json"),
        "missing obs column": Case("ingest", ["--input", str(good), "--obs-columns", "sex"], "sex", "out/index.json"),
        "bad format": Case("ingest", ["--input", str(good), "--format", "parquet"], "--format", "out/index.json"),
        "bad split-by": Case("ingest", ["--input", str(good), "--split-by", "tissue"], "--split-by", "out/index.json"),
        "bad val fraction": Case(
            "ingest", ["--input", str(good), "--val-fraction", "1.5"], "--val-fraction", "out/index.json"
        ),
        "zero cells per shard": Case(
            "ingest", ["--input", str(good), "--cells-per-shard", "0"], "--cells-per-shard", "out/index.json"
        ),
        "unknown flag": Case("ingest", ["--input", str(good), "--shards", "4"], "--shards", "out/index.json", code=2),
        # -- ingest: outputs -------------------------------------------------------------------------
        "--out holds another shard set": Case(
            "ingest", ["--input", str(good), "--out", str(tmp / "other")], "different shard set"
        ),
        "--out is a file": Case("ingest", ["--input", str(good), "--out", str(tmp / "a-file" / "set")], "is a file"),
        "--out is not empty": Case(
            "ingest", ["--input", str(good), "--out", str(tmp / "not-empty")], "not empty", "not-empty/index.json"
        ),
        # -- shard sets --------------------------------------------------------------------------------
        "verify: not a shard set": Case("verify", [str(tmp / "not-empty")], "index.json"),
        "verify: edited manifest": Case("verify", [str(edited)], "does not match its checksum"),
        "stream: a shard is missing": Case(
            "stream", [str(holed), "--batch-size", "8", "--context-length", "64"], "shard-000000.zarr"
        ),
        "train: data.path is an h5ad": Case("train", ["--data.path", str(good), *run], "data.path=", NOTHING),
        "train: edited manifest": Case(
            "train", ["--data.path", str(edited), *run], "does not match its checksum", NOTHING
        ),
        # -- training configs --------------------------------------------------------------------------
        "unknown strategy": Case("train", ["--trainer.strategy", "horovod", *run], "trainer.strategy=", NOTHING),
        "unknown scheduler": Case(
            "train", ["--model.scheduler.name", "Nonsense", *run], "model.scheduler.name=", NOTHING
        ),
        "missing val split": Case("train", ["--data.val_split", "holdout", *run], "data.val_split=", NOTHING),
        "context too short": Case("train", ["--data.context_length", "2", *run], "context_length", NOTHING),
        "bad precision": Case("train", ["--trainer.precision", "4-bit", *run], "trainer.precision", NOTHING, code=2),
        "num_nodes disagrees with the launcher": Case(
            "train",
            ["--trainer.num_nodes", "3", *run],
            "trainer.num_nodes=3 but the launcher started 2 nodes",
            NOTHING,
            env={"WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "1", "RANK": "0", "LOCAL_RANK": "0"},
        ),
        "unknown key": Case("train", ["--data.shuffle_buffer", "10", *run], "shuffle_buffer", NOTHING, code=2),
        # -- checkpoints -------------------------------------------------------------------------------
        "fit: missing checkpoint": Case("train", ["--ckpt_path", str(tmp / "gone.ckpt"), *run], "gone.ckpt", NOTHING),
        "fit: truncated checkpoint": Case(
            "train",
            ["--ckpt_path", str(tmp / "truncated.ckpt"), *run],
            "truncated.ckpt: cannot read it as a checkpoint",
            NOTHING,
        ),
        "fit: pickled code in a checkpoint": Case(
            "train",
            ["--ckpt_path", str(tmp / "trap.ckpt"), *run],
            "trap.ckpt: cannot read it as a checkpoint",
            "pickle-ran",
        ),
        "embed: not a checkpoint": Case(
            "embed",
            ["--ckpt", str(tmp / "text.h5ad"), "--data", str(zarr_set), "--out", "cells.h5ad"],
            "text.h5ad",
            "cells.h5ad",
        ),
        "embed: pickled code": Case(
            "embed",
            ["--ckpt", str(tmp / "trap.ckpt"), "--data", str(zarr_set), "--out", "cells.h5ad"],
            "trap.ckpt",
            "pickle-ran",
        ),
        "export: not a cellshard checkpoint": Case(
            "export", ["--ckpt", str(tmp / "plain.pt"), "--out", "model.pt"], "not a cellshard checkpoint", "model.pt"
        ),
        "export: missing checkpoint": Case(
            "export", ["--ckpt", str(tmp / "gone"), "--out", "model.pt"], "gone", "model.pt"
        ),
    }


def _runner(stage: str, zarr_set: Path, where: Path) -> Callable[[list[str]], int]:
    def call(main: Callable[[list[str]], int], argv: list[str]) -> int:
        try:
            return main(argv)
        except SystemExit as exc:  # usage errors: the parser exits 2 itself
            return int(exc.code)

    if stage == "ingest":
        from ingest.cli import main

        return lambda args: call(
            main, ["build", *(["--out", str(where / "out")] if "--out" not in args else []), "--quiet", *args]
        )
    if stage == "verify":
        from ingest.cli import main

        return lambda args: call(main, ["verify", *args])
    if stage == "stream":
        from shards.__main__ import main

        return lambda args: call(main, ["stream", *args])
    if stage == "train":
        from training.fit.cli import main

        base = [
            "fit",
            "--config",
            TINY,
            "--data.path",
            str(zarr_set),
            "--trainer.max_steps",
            "1",
            "--data.num_workers",
            "0",
            "--trainer.enable_progress_bar",
            "false",
        ]
        return lambda args: call(main, [*base, *args])
    from training.tools import main

    return lambda args: call(main, [stage, *args])


def test_bad_inputs_fail_cleanly_across_the_stages(zarr_set, tmp_path, capsys, monkeypatch):
    cases = _inputs(tmp_path, zarr_set)
    assert len(cases) >= 20 and {c.stage for c in cases.values()} >= {
        "ingest",
        "verify",
        "stream",
        "train",
        "embed",
        "export",
    }
    for name, case in cases.items():
        where = tmp_path / name.replace(" ", "_").replace(":", "").replace("/", "_")
        where.mkdir()
        monkeypatch.chdir(where)
        for key, value in (case.env or {}).items():
            monkeypatch.setenv(key, value)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # library warnings on the way are not what this checks
            code = _runner(case.stage, zarr_set, where)(case.args)
        captured = capsys.readouterr()
        err = captured.err + (captured.out if case.stage == "verify" else "")
        assert code == case.code, (name, code, err[-2000:])
        assert case.culprit in err, (name, err[-2000:])
        assert "Traceback" not in err, (name, err[-2000:])
        if case.written:
            assert not list(where.glob(case.written)) and not list(tmp_path.glob(case.written)), name
        if case.stage == "train":
            assert not list(where.glob("run/**/*.ckpt")) and not (where / "run" / "history.csv").exists(), name
        for key in case.env or {}:
            monkeypatch.delenv(key)
