"""Every command line but fit/validate comes from a table of typed functions (``shards.commands``): each
flag has help from its docstring, and a mistyped flag gets one line naming the closest valid one."""

from __future__ import annotations

import dataclasses
import inspect
import typing

import pytest

from ingest.cli import COMMANDS as INGEST
from ingest.cli import main as ingest_main
from shards.__main__ import COMMANDS as SHARDS
from shards.__main__ import main as shards_main
from shards.commands import command_parser
from training.tools import COMMANDS as TRAINING
from training.tools import main as training_main

TABLES = {"ingest": INGEST, "python -m training": TRAINING, "python -m shards": SHARDS}


@pytest.mark.parametrize("prog", list(TABLES))
def test_every_flag_has_help_from_its_function(prog):
    table = TABLES[prog]
    _, flags = command_parser(prog, "", table)
    for name, fn in table.items():
        assert inspect.getdoc(fn), f"{prog} {name}: no docstring"
        hints = typing.get_type_hints(fn)
        documented = inspect.getdoc(fn)
        for param in inspect.signature(fn).parameters:
            if dataclasses.is_dataclass(hints.get(param)):
                continue  # its fields' attribute docstrings are the help (tests/test_options.py)
            assert f"{param}:" in documented, f"{prog} {name}: {param} has no Args entry"
            if inspect.signature(fn).parameters[param].default is not inspect.Parameter.empty:
                assert "--" + param.replace("_", "-") in flags[name]


@pytest.mark.parametrize(
    ("main", "argv", "typo", "want"),
    [
        (ingest_main, ["build", "--input", "x.h5ad", "--out", "o"], "--val-fractoin", "--val-fraction"),
        (ingest_main, ["synth", "--cells", "10", "--out", "x.h5ad"], "--quiett", "--quiet"),
        (training_main, ["embed", "--ckpt", "c", "--out", "o.h5ad"], "--batchsize", "--batch-size"),
        (shards_main, ["stream", "s"], "--token_budgett", "--token-budget"),
    ],
)
def test_a_mistyped_flag_is_one_line_with_the_closest(main, argv, typo, want, capsys):
    assert main([*argv, typo, "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].endswith(f"{typo} is not an option of {argv[0]}; did you mean {want}?"), err


def test_an_underscored_flag_is_told_its_dashed_name(capsys):
    assert training_main(["report", "--run", "r", "--must_beat", "pca50"]) == 2
    assert capsys.readouterr().err.strip().endswith("--must_beat is not an option of report; did you mean --must-beat?")


def test_a_mistyped_fit_key_is_one_line_with_the_closest(capsys):
    """LightningCLI's fit and validate too: the key is checked against the subcommand's parser before
    parsing (a page of usage otherwise), and keys inside a mapping option (model.optimizer.lr) pass."""
    from training.fit.cli import main

    for argv, want in (
        (["fit", "--trainer.max_stepz", "3"], "--trainer.max_steps"),
        (["validate", "--model.optimizer.lr", "0.1", "--data.val_splt", "val"], "--data.val_split"),
    ):
        with pytest.raises(SystemExit) as stop:
            main(argv)
        assert stop.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].endswith(f"did you mean {want}?"), err


def test_a_new_command_is_one_function_and_one_table_row(zarr_set, capsys):
    """docs/EXTENDING.md's walk-through, as written there: a typed function in a table is a command with
    its positional argument, its flags, its help and the closest-flag hint."""
    from shards.commands import run
    from shards.format.manifest import read_manifest
    from training.errors import ConfigError

    def count(data: str, *, split: str = "train", quiet: bool = False) -> int:
        """Count the cells of a split.

        Args:
            data: the shard set.
            split: which split.
            quiet: print the number only.
        """
        splits = read_manifest(data).splits
        if split not in splits:  # a user's mistake: one line (exit 1), not a traceback
            raise ConfigError(f"--split {split}: {data} has the splits {', '.join(splits)}")
        n = splits[split].n_cells
        print(n if quiet else f"{split}: {n} cells")
        return 0

    table = {**TRAINING, "count": count}
    assert run("python -m training", "", table, ["count", str(zarr_set), "--split", "val", "--quiet"]) == 0
    assert int(capsys.readouterr().out) == read_manifest(zarr_set).splits["val"].n_cells
    assert run("python -m training", "", table, ["count", str(zarr_set), "--splt", "val"]) == 2
    assert capsys.readouterr().err.strip().endswith("--splt is not an option of count; did you mean --split?")
    assert run("python -m training", "", table, ["count", str(zarr_set), "--split", "test"]) == 1
    assert (
        capsys.readouterr().err.strip()
        == f"python -m training count: error: --split test: {zarr_set} has the splits train, val"
    )
    with pytest.raises(SystemExit):
        run("python -m training", "", table, ["count", "--help"])
    assert "which split" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("main", "argv", "want"),
    [
        (ingest_main, ["verify"], "ingest verify: error: the following arguments are required: PATH"),
        (
            training_main,
            ["embed"],
            "python -m training embed: error: the following arguments are required: --ckpt, --out",
        ),
        (ingest_main, ["synth", "--cells", "abc", "--out", "x.h5ad"], "ingest synth: error: --cells: Expected a"),
    ],
)
def test_a_usage_error_is_one_line_in_the_user_s_terms(main, argv, want, capsys):
    """Missing arguments and bad values name the argument as the user types it (``PATH``, ``--out``),
    never the parser's internal key (``verify.path``), in one line, exit 2."""
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(want) and "." + argv[0] not in err[0].split("(see")[0], err


@pytest.mark.parametrize("extra", [[], ["--pack"], ["--collate-on", "device"], ["--pack", "--collate-on", "device"]])
def test_stream_counts_cells_padded_packed_and_collated_on_the_device(zarr_set, extra, capsys):
    """``python -m shards stream`` reports cells, not rows (a packed batch holds more cells than rows), and
    streams ragged batches (collate on device) by padding them here, as a GPU would."""
    argv = ["stream", str(zarr_set), "--batch-size", "16", "--context-length", "1024", "--max-batches", "5"]
    assert shards_main([*argv, *extra]) == 0
    assert ", 80 cells in " in capsys.readouterr().out
