"""Commands from typed functions: the one idiom of every command line in cellshard but ``fit``/``validate``.

A package keeps one table, ``{name: function}``; each function's signature is its command line and its
docstring its help (the summary line lists it, the ``Args:`` section gives each flag's help, as
litgpt's ``CLI`` and jsonargparse read them). Parameters before ``*`` without a default are positional;
the others are dashed flags (``batch_size`` -> ``--batch-size``; a ``bool`` defaulting to False is a
switch; ``list[X]`` takes several values); a parameter typed with an options dataclass
(``BuildOptions``) gets one flag per field (``options.add_flags``). Every command also reads
``--config FILE.yaml``. ``run`` parses, calls, and turns a ``CellshardError`` into one line and exit 1;
a mistyped flag is one line naming the closest valid one (exit 2), not a page of usage.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import re
import sys
import typing
from argparse import ArgumentError
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .errors import CellshardError
from .options import add_flags, flag_name

__all__ = ["Command", "command_parser", "mistyped_key", "run"]

Command = Callable[..., int | None]


def _docs(fn: Command) -> tuple[str, str, dict[str, str]]:
    """(summary line, description, {parameter: help}) from a Google-style docstring."""
    from docstring_parser import parse

    doc = parse(inspect.getdoc(fn) or "")
    summary = (doc.short_description or fn.__name__).strip()
    text = " ".join(p for p in (doc.short_description, doc.long_description) if p)
    return summary, " ".join(text.split()), {p.arg_name: " ".join((p.description or "").split()) for p in doc.params}


def _list_of(tp: Any) -> Any:
    args = [a for a in typing.get_args(tp) if a is not type(None)] if typing.get_origin(tp) is not list else [tp]
    if len(args) == 1 and typing.get_origin(args[0]) is list:
        return typing.get_args(args[0])[0]
    return None


def _add_parameters(parser: Any, fn: Command) -> list[str]:
    """Arguments for ``fn``'s parameters; returns the flags added (for the closest-match hint)."""
    _, _, helps = _docs(fn)
    hints = typing.get_type_hints(fn)
    flags = []
    for name, p in inspect.signature(fn).parameters.items():
        tp = hints.get(name, str)
        if dataclasses.is_dataclass(tp):
            given = {} if p.default is p.empty else {f.name: getattr(p.default, f.name) for f in dataclasses.fields(tp)}
            add_flags(parser, tp, defaults=given)
            flags += [flag_name(f.name) for f in dataclasses.fields(tp) if f.metadata.get("flag") is not False]
            continue
        kw: dict[str, Any] = {"help": helps.get(name, "")}
        if p.kind is p.POSITIONAL_OR_KEYWORD and p.default is p.empty:
            parser.add_argument(name, type=tp, **kw)
            continue
        flag = flag_name(name)
        flags.append(flag)
        if tp is bool and p.default is False:
            parser.add_argument(flag, action="store_true", dest=name, **kw)
            continue
        item = _list_of(tp)
        if item is not None:
            kw["nargs"] = "+"
            tp = item
        if p.default is p.empty:
            kw["required"] = True
        else:
            kw["default"] = p.default
        parser.add_argument(flag, type=tp, dest=name, **kw)
    return flags


def command_parser(
    prog: str, description: str, commands: Mapping[str, Command], only: str | None = None
) -> tuple[Any, dict[str, list[str]]]:
    """The jsonargparse parser of a command table, and each command's flags. ``only``: build that
    command's arguments alone (the others are listed, not built): a command line resolves the types of
    the command it runs only, so one command's heavy option classes never slow another's start."""
    from jsonargparse import ActionConfigFile, ArgumentParser

    root = ArgumentParser(prog=prog, description=description, exit_on_error=False)
    sub = root.add_subcommands(dest="command")
    flags = {}
    for name, fn in commands.items():
        summary, text, _ = _docs(fn)
        p = ArgumentParser(description=text, exit_on_error=False)
        if only is None or name == only:
            p.add_argument("--config", action=ActionConfigFile, help="YAML file with any of these options")
            flags[name] = ["--config", "--print_config", "--help", *_add_parameters(p, fn)]
        sub.add_subcommand(name, p, help=summary)
    return root, flags


def mistyped_key(args: Sequence[str], keys: Sequence[str], command: str) -> str | None:
    """For a parser of dotted keys (LightningCLI's ``--trainer.max_steps``): the first ``--key`` of
    ``args`` that is neither an option, a group of options, nor inside an option whose value is a
    mapping (``--model.optimizer.lr``), as one line naming the closest option at its level."""
    leaves = set(keys)
    groups = {".".join(k.split(".")[:i]) for k in leaves for i in range(1, k.count(".") + 1)}
    for arg in args:
        if not arg.startswith("--") or arg == "--":
            continue
        key = arg[2:].split("=", 1)[0].removesuffix("+")
        parts = key.split(".")
        if key in leaves | groups or any(".".join(parts[:i]) in leaves for i in range(1, len(parts))):
            continue
        level = [k for k in leaves | groups if k.count(".") == key.count(".")]
        close = difflib.get_close_matches(key, level, n=1, cutoff=0.7)
        hint = f"; did you mean --{close[0]}?" if close else f" (see `{command} --help`)"
        return f"--{key} is not an option of {command.rsplit(' ', 1)[-1]}{hint}"
    return None


def _mistyped(argv: Sequence[str], flags: dict[str, list[str]], prog: str) -> str | None:
    """One line for the first flag the command does not have, with the closest one it has."""
    if not argv or argv[0] not in flags:
        return None
    known = flags[argv[0]]
    for arg in argv[1:]:
        if not arg.startswith("--") or arg == "--":
            continue
        flag = arg.split("=", 1)[0]
        if flag not in known:
            close = difflib.get_close_matches(flag.replace("_", "-"), known, n=1, cutoff=0.7)
            hint = f"; did you mean {close[0]}?" if close else f" (see `{prog} {argv[0]} --help`)"
            return f"{prog} {argv[0]}: error: {flag} is not an option of {argv[0]}{hint}"
    return None


def _usage_error(prog: str, command: str | None, commands: Mapping[str, Command], message: str) -> str:
    """jsonargparse's message with its internal keys (``verify.path``) as the user types them: a
    positional as its name in capitals (``PATH``), an option as its flag (``--out``)."""
    if command is not None:
        params = inspect.signature(commands[command]).parameters

        def spelled(match: re.Match) -> str:
            p = params.get(match.group(1))
            positional = p is not None and p.kind is not p.KEYWORD_ONLY and p.default is p.empty
            return match.group(1).upper() if positional else flag_name(match.group(1))

        message = re.sub(rf"\b{re.escape(command)}\.(\w+)", spelled, message)
        message = re.sub(r'Parser key "(\w+)"', lambda m: flag_name(m.group(1)), message)
    message = " ".join(message.split())
    where = f"{prog} {command}" if command else prog
    return f"{where}: error: {message} (see `{where} --help`)"


def _arguments(fn: Command, given: Any) -> dict[str, Any]:
    """``fn``'s keyword arguments from its parsed namespace (an options dataclass built from its flags:
    its own checks run here, inside ``run``'s error handling)."""
    kwargs: dict[str, Any] = {}
    hints = typing.get_type_hints(fn)
    for pname in inspect.signature(fn).parameters:
        tp = hints.get(pname)
        if dataclasses.is_dataclass(tp):
            fields = {f.name for f in dataclasses.fields(tp)}
            kwargs[pname] = tp(**{k: v for k, v in vars(given).items() if k in fields})
        else:
            kwargs[pname] = given[pname]
    return kwargs


def run(
    prog: str,
    description: str,
    commands: Mapping[str, Command],
    argv: Sequence[str] | None = None,
    *,
    interrupted: str = "",
) -> int:
    """Parse ``argv``, run the command, and say what went wrong in one line: 1 for a user error
    (``CellshardError``), 2 for a usage error, 130 when interrupted."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser, flags = command_parser(prog, description, commands, only=argv[0] if argv else "")
    typo = _mistyped(argv, flags, prog)
    if typo:
        print(typo, file=sys.stderr)
        return 2
    try:
        ns = parser.parse_args(argv)
    except ArgumentError as exc:  # other usage errors: one line in the user's terms, exit 2
        command = argv[0] if argv and argv[0] in commands else None
        print(_usage_error(prog, command, commands, str(exc)), file=sys.stderr)
        return 2
    name = ns.command
    fn = commands[name]
    try:
        return int(fn(**_arguments(fn, ns[name])) or 0)
    except CellshardError as exc:
        print(f"{prog} {name}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{prog} {name}: interrupted{'; ' + interrupted if interrupted else ''}", file=sys.stderr)
        return 130
