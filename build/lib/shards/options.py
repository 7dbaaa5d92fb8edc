"""Typed options as the one source of command-line flags, their help and their documentation.

A stage's options are a dataclass with a docstring under each attribute (``LoaderConfig``,
``ingest.BuildOptions``). From it come the dashed flags of a command (``add_flags``: the name, the type,
the default and the help, so nothing is declared twice), and the option tables of ``docs/OPTIONS.md``
(``markdown_table``). A field's ``metadata`` may refine its flag: ``nargs``, ``group`` (an argument
group's title), ``flag`` (``False``: no flag, e.g. values only a config file sets).
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import itertools
import re
import textwrap
import typing
from functools import cache
from typing import Any

__all__ = ["add_flags", "attribute_docs", "flag_name", "markdown_table", "type_name"]


@cache
def attribute_docs(cls: type) -> dict[str, str]:
    """Each attribute's docstring (the string literal right under its annotation), from the source."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        body = tree.body[0].body  # type: ignore[attr-defined]
        for node, after in itertools.pairwise(body):
            if (
                isinstance(node, ast.AnnAssign)
                and isinstance(node.target, ast.Name)
                and isinstance(after, ast.Expr)
                and isinstance(after.value, ast.Constant)
                and isinstance(after.value.value, str)
            ):
                docs[node.target.id] = " ".join(inspect.cleandoc(after.value.value).split())
    return docs


def flag_name(name: str) -> str:
    return "--" + name.replace("_", "-")


def _default(field: dataclasses.Field) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return dataclasses.MISSING


def _list_of(tp: Any) -> Any:
    """The item type of ``list[X]`` or ``list[X] | None`` (a flag taking several values), else None."""
    args = [a for a in typing.get_args(tp) if a is not type(None)] if typing.get_origin(tp) is not list else [tp]
    if len(args) == 1 and typing.get_origin(args[0]) is list:
        return typing.get_args(args[0])[0]
    return None


def type_name(tp: Any) -> str:
    """A short, readable type for tables (``int``, ``str | None``, ``list[str]``)."""
    text = getattr(tp, "__name__", None) if not typing.get_args(tp) else None
    if text:
        return text
    return re.sub(r"\b(?:\w+\.)+(\w+)", r"\1", str(tp)).replace("NoneType", "None")


def add_flags(
    parser: Any,
    cls: type,
    *,
    exclude: tuple[str, ...] = (),
    defaults: dict[str, Any] | None = None,
    required: tuple[str, ...] = (),
) -> None:
    """Add one dashed flag per field of ``cls`` to a jsonargparse ``parser`` (dest = the field name).

    Booleans that default to False are switches (``--quiet``); list fields take ``nargs`` from their
    metadata (default ``*``); help is the attribute's docstring."""
    docs = attribute_docs(cls)
    hints = typing.get_type_hints(cls)
    defaults = defaults or {}
    groups: dict[str, Any] = {}
    for field in dataclasses.fields(cls):
        meta = field.metadata
        if field.name in exclude or meta.get("flag") is False:
            continue
        target = parser
        if meta.get("group"):
            title = meta["group"]
            target = groups.get(title) or groups.setdefault(title, parser.add_argument_group(title))
        default = defaults.get(field.name, _default(field))
        kw: dict[str, Any] = {"help": docs.get(field.name, "").replace("``", "'"), "dest": field.name}
        tp = hints[field.name]
        if tp is bool and default is False:
            target.add_argument(flag_name(field.name), action="store_true", **kw)
            continue
        listed = _list_of(tp)
        if listed is not None:
            kw["nargs"] = meta.get("nargs", "*")
            tp = listed
        if field.name in required or default is dataclasses.MISSING:
            kw["required"] = True
        else:
            kw["default"] = default
        target.add_argument(flag_name(field.name), type=tp, **kw)


def markdown_table(cls: type, *, exclude: tuple[str, ...] = (), flags: bool = True, prefix: str = "") -> str:
    """The option table of ``cls``: option, type, default, meaning (from the attribute docstrings)."""
    docs = attribute_docs(cls)
    hints = typing.get_type_hints(cls)
    rows = ["| option | type | default | meaning |", "|---|---|---|---|"]
    for field in dataclasses.fields(cls):
        if field.name in exclude or (field.metadata.get("flag") is False and flags):
            continue
        name = flag_name(field.name) if flags else prefix + field.name
        default = _default(field)
        shown = "required" if default is dataclasses.MISSING else f"`{default!r}`"
        meaning = docs.get(field.name, "").replace("|", "\\|")
        shown_type = type_name(hints[field.name]).replace("|", "\\|")
        rows.append(f"| `{name}` | `{shown_type}` | {shown} | {meaning} |")
    return "\n".join(rows)
