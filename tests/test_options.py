"""Options are declared once, as typed dataclasses: the parsers, their help and ``docs/OPTIONS.md`` are
generated from them, and stay so."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest
import yaml

from ingest.cli import parser as ingest_parser
from ingest.options import BuildOptions
from shards.__main__ import parser as stream_parser
from shards.loading.config import LoaderConfig
from shards.options import attribute_docs
from shards.plan import Stream, Weighting
from tests.conftest import ROOT

TINY = str(ROOT / "configs" / "train" / "tiny.yaml")


def _dests(parser, sub: str) -> set[str]:
    return {a.dest for a in parser._subcommands_action._name_parser_map[sub]._actions}  # jsonargparse's map


def test_option_tables_are_generated_from_the_code():
    proc = subprocess.run([sys.executable, "docs/options.py", "--check"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("cls", [BuildOptions, LoaderConfig, Stream, Weighting])
def test_every_option_is_documented(cls):
    docs = attribute_docs(cls)
    undocumented = [f.name for f in dataclasses.fields(cls) if len(docs.get(f.name, "")) < 10]
    assert not undocumented, undocumented


def test_parsers_are_the_dataclasses():
    assert {f.name for f in dataclasses.fields(BuildOptions)} <= _dests(ingest_parser(), "build")
    assert {f.name for f in dataclasses.fields(LoaderConfig)} <= _dests(stream_parser(), "stream")
    ns = stream_parser().parse_args(["stream", "x", "--token-budget", "900", "--balance-tokens"]).stream
    assert ns.token_budget == 900 and ns.balance_tokens and ns.batch_size == 64


def test_the_training_data_section_is_the_loader_config(zarr_set, tmp_path, monkeypatch, capsys):
    """Every LoaderConfig field is a ``data.*`` key with its docstring as help; typed mixes validate."""
    from training.fit.cli import CellshardCLI

    monkeypatch.setattr("sys.argv", ["python -m training"])
    with pytest.raises(SystemExit):
        CellshardCLI(args=["--help"], run=False)
    helptext = capsys.readouterr().out
    for name in LoaderConfig.field_names():
        assert f"--data.{name} " in helptext, name
    assert attribute_docs(LoaderConfig)["token_budget"][:30] in " ".join(helptext.split())
    streams = '[{"path": "%s", "weight": 0.5, "name": "a"}, {"path": "%s", "weight": 0.5, "name": "b"}]'
    args = [
        "--config",
        TINY,
        "--data.path",
        "null",
        "--data.streams",
        streams % (zarr_set, zarr_set),
        "--data.weighting",
        '{"column": "cell_type", "smoothing": 10}',
        "--data.num_workers",
        "0",
        "--trainer.default_root_dir",
        str(tmp_path),
        "--print_config",
    ]
    with pytest.raises(SystemExit):
        CellshardCLI(args=args, run=False)
    data = yaml.safe_load(capsys.readouterr().out)["data"]
    assert data["streams"][1] == {
        "path": str(zarr_set),
        "weight": 0.5,
        "repeat": None,
        "choose": None,
        "split": None,
        "name": "b",
        "proportion": None,
    }
    assert data["weighting"]["smoothing"] == 10 and data["weighting"]["curriculum_epochs"] == 0
    bad = [*args[:-1], "--data.streams", '[{"path": "x", "weigth": 1}]']
    with pytest.raises(SystemExit) as exc:
        CellshardCLI(args=bad, run=False)
    assert exc.value.code == 2 and "weigth" in capsys.readouterr().err
