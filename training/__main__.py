"""``python -m training fit|validate|embed|export|report ...``: fit and validate are LightningCLI's; every
other command is a typed function of ``training.tools.COMMANDS`` (adding one there is all it takes)."""

from __future__ import annotations

import difflib
import inspect
import sys

LIGHTNING = {
    "fit": "pretrain (or resume with --ckpt_path) a model on a shard set: --config configs/train/tiny.yaml",
    "validate": "one pass over a run's val split",
}


def _summary(fn, limit: int = 96) -> str:
    """A command's docstring's first paragraph, cut at a word under ``limit`` characters."""
    text = " ".join((inspect.getdoc(fn) or "").split("\n\n")[0].split())
    return text if len(text) <= limit else text[: text.rfind(" ", 0, limit - 3)] + " ..."


def usage() -> str:
    from .tools import COMMANDS

    lines = {**LIGHTNING, **{n: _summary(f) for n, f in COMMANDS.items()}}
    width = max(map(len, lines)) + 2
    listed = "\n".join(f"  {name:<{width}}{text}" for name, text in lines.items())
    return (
        "usage: python -m training COMMAND [options]\n\n"
        "cellshard training: pretrain on a shard set, then use the model\n\n"
        f"commands:\n{listed}\n\n"
        "`python -m training COMMAND --help` lists a command's options.\n"
    )


def _dispatch(argv: list[str]) -> int:
    from .tools import COMMANDS

    if not argv or argv[0] in ("-h", "--help"):
        print(usage(), end="", file=sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    if argv[0] in COMMANDS:
        from .tools import main as tools_main

        return tools_main(argv)
    if argv[0] not in LIGHTNING and not argv[0].startswith("-"):
        names = [*LIGHTNING, *COMMANDS]
        close = difflib.get_close_matches(argv[0], names, n=1)
        hint = f"did you mean {close[0]}?" if close else f"the commands: {', '.join(names)}"
        print(f"python -m training: error: {argv[0]!r} is not a command; {hint}", file=sys.stderr)
        return 2
    from .fit.cli import main

    return main(None)  # LightningCLI reads sys.argv itself


if __name__ == "__main__":
    sys.exit(_dispatch(sys.argv[1:]))
